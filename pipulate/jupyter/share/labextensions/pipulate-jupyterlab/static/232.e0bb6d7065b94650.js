"use strict";(self.rspackChunkpipulate_jupyterlab=self.rspackChunkpipulate_jupyterlab||[]).push([[232],{475(e,t,r){var o=r(601),a=r.n(o),p=r(314),n=(r.n(p))()(a());n.push([e.id,`/* Only JupyterLab's CSS variables: the same look in light and dark themes. */
.jp-pipulate-status {
  cursor: pointer;
  padding: 0 4px;
  line-height: 24px;
  white-space: nowrap;
  color: var(--jp-ui-font-color1);
}

.jp-pipulate-status.jp-pipulate-mod-saving {
  color: var(--jp-ui-font-color2);
  font-style: italic;
}

.jp-pipulate-status.jp-pipulate-mod-warning {
  color: var(--jp-warn-color0);
  background: var(--jp-warn-color3);
}

.jp-pipulate-panel {
  overflow: auto;
  padding: 8px 12px;
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
  min-width: 380px;
}

.jp-pipulate-panel h2 {
  font-size: var(--jp-ui-font-size3);
  font-weight: 600;
  margin: 4px 0;
}

.jp-pipulate-panel h3 {
  font-size: var(--jp-ui-font-size2);
  font-weight: 600;
  margin: 14px 0 4px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color2);
  padding-bottom: 2px;
}

.jp-pipulate-panel h4 {
  font-size: var(--jp-ui-font-size1);
  font-weight: 600;
  margin: 10px 0 4px;
}

.jp-pipulate-sub,
.jp-pipulate-summary {
  color: var(--jp-ui-font-color2);
  margin: 2px 0 6px;
}

.jp-pipulate-actions {
  display: flex;
  flex-wrap: wrap;
  gap: 4px;
  margin: 6px 0;
}

.jp-pipulate-panel .jp-pipulate-button {
  height: 24px;
  line-height: 22px;
  padding: 0 8px;
  font-size: var(--jp-ui-font-size1);
  min-width: 0;
}

.jp-pipulate-panel .jp-pipulate-danger {
  color: var(--jp-error-color1);
}

.jp-pipulate-table {
  border-collapse: collapse;
  width: 100%;
}

.jp-pipulate-table th {
  text-align: left;
  font-weight: 600;
  color: var(--jp-ui-font-color2);
  border-bottom: var(--jp-border-width) solid var(--jp-border-color2);
  padding: 2px 4px;
}

.jp-pipulate-table td {
  padding: 2px 4px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color3);
  vertical-align: middle;
}

.jp-pipulate-table tbody tr:hover {
  background: var(--jp-layout-color2);
}

.jp-pipulate-panel code {
  font-family: var(--jp-code-font-family);
  font-size: var(--jp-code-font-size);
}

.jp-pipulate-version {
  padding: 4px 0;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color3);
}

.jp-pipulate-version-head {
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 2px 8px;
}

.jp-pipulate-version-head button {
  margin-left: auto;
}

.jp-pipulate-cell {
  display: block;
  margin: 2px 0 0 20px;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
  color: var(--jp-ui-font-color2);
}

.jp-pipulate-skipped td:last-child,
.jp-pipulate-note,
.jp-pipulate-error {
  color: var(--jp-warn-color0);
}

.jp-pipulate-diff-added strong {
  color: var(--jp-success-color1);
}

.jp-pipulate-diff-modified strong {
  color: var(--jp-warn-color1);
}

.jp-pipulate-diff-deleted strong {
  color: var(--jp-error-color1);
}

.jp-pipulate-empty {
  color: var(--jp-ui-font-color2);
}
`,""]),r.d(t,{},{A:n})},314(e){e.exports=function(e){var t=[];return t.toString=function(){return this.map(function(t){var r="",o=void 0!==t[5];return t[4]&&(r+="@supports (".concat(t[4],") {")),t[2]&&(r+="@media ".concat(t[2]," {")),o&&(r+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),r+=e(t),o&&(r+="}"),t[2]&&(r+="}"),t[4]&&(r+="}"),r}).join("")},t.i=function(e,r,o,a,p){"string"==typeof e&&(e=[[null,e,void 0]]);var n={};if(o)for(var i=0;i<this.length;i++){var l=this[i][0];null!=l&&(n[l]=!0)}for(var c=0;c<e.length;c++){var s=[].concat(e[c]);o&&n[s[0]]||(void 0!==p&&(void 0===s[5]||(s[1]="@layer".concat(s[5].length>0?" ".concat(s[5]):""," {").concat(s[1],"}")),s[5]=p),r&&(s[2]&&(s[1]="@media ".concat(s[2]," {").concat(s[1],"}")),s[2]=r),a&&(s[4]?(s[1]="@supports (".concat(s[4],") {").concat(s[1],"}"),s[4]=a):s[4]="".concat(a)),t.push(s))}},t}},601(e){e.exports=function(e){return e[1]}},72(e){var t=[];function r(e){for(var r=-1,o=0;o<t.length;o++)if(t[o].identifier===e){r=o;break}return r}function o(e,o){for(var a={},p=[],n=0;n<e.length;n++){var i=e[n],l=o.base?i[0]+o.base:i[0],c=a[l]||0,s="".concat(l," ").concat(c);a[l]=c+1;var u=r(s),d={css:i[1],media:i[2],sourceMap:i[3],supports:i[4],layer:i[5]};if(-1!==u)t[u].references++,t[u].updater(d);else{var f=function(e,t){var r=t.domAPI(t);return r.update(e),function(t){t?(t.css!==e.css||t.media!==e.media||t.sourceMap!==e.sourceMap||t.supports!==e.supports||t.layer!==e.layer)&&r.update(e=t):r.remove()}}(d,o);o.byIndex=n,t.splice(n,0,{identifier:s,updater:f,references:1})}p.push(s)}return p}e.exports=function(e,a){var p=o(e=e||[],a=a||{});return function(e){e=e||[];for(var n=0;n<p.length;n++){var i=r(p[n]);t[i].references--}for(var l=o(e,a),c=0;c<p.length;c++){var s=r(p[c]);0===t[s].references&&(t[s].updater(),t.splice(s,1))}p=l}}},659(e){var t={};e.exports=function(e,r){var o=function(e){if(void 0===t[e]){var r=document.querySelector(e);if(window.HTMLIFrameElement&&r instanceof window.HTMLIFrameElement)try{r=r.contentDocument.head}catch(e){r=null}t[e]=r}return t[e]}(e);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(r)}},540(e){e.exports=function(e){var t=document.createElement("style");return e.setAttributes(t,e.attributes),e.insert(t,e.options),t}},56(e,t,r){e.exports=function(e){var t=r.nc;t&&e.setAttribute("nonce",t)}},206(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=e.insertStyleElement(e);return{update:function(r){var o,a,p;o="",r.supports&&(o+="@supports (".concat(r.supports,") {")),r.media&&(o+="@media ".concat(r.media," {")),(a=void 0!==r.layer)&&(o+="@layer".concat(r.layer.length>0?" ".concat(r.layer):""," {")),o+=r.css,a&&(o+="}"),r.media&&(o+="}"),r.supports&&(o+="}"),(p=r.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(p))))," */")),e.styleTagTransform(o,t,e.options)},remove:function(){var e;null===(e=t).parentNode||e.parentNode.removeChild(e)}}}},113(e){e.exports=function(e,t){if(t.styleSheet)t.styleSheet.cssText=e;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(e))}}},579(e,t,r){var o=r(72),a=r.n(o),p=r(206),n=r.n(p),i=r(659),l=r.n(i),c=r(56),s=r.n(c),u=r(540),d=r.n(u),f=r(113),v=r.n(f),j=r(475),h={};h.styleTagTransform=v(),h.setAttributes=s(),h.insert=l().bind(null,"head"),h.domAPI=n(),h.insertStyleElement=d(),a()(j.A,h),j.A&&j.A.locals&&j.A.locals}}]);