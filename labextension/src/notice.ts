// The restore notice: a JupyterLab notification when a notebook's kernel (re)starts.
import { Notification } from '@jupyterlab/apputils';

import { localTime } from './api';
import { IRestoreReport, KernelLink } from './model';

function names(list: string[], limit = 12): string {
  return list.length <= limit ? list.join(', ') : `${list.slice(0, limit).join(', ')}, … (+${list.length - limit})`;
}

export function restoreText(link: KernelLink, report: IRestoreReport): string {
  const name = link.panel.context.localPath;
  if (report.version === null) {
    return `${name}: state not restored (${report.not_restored}). Saved versions are kept` +
      (report.latest ? ` (latest: ${report.latest}).` : '.');
  }
  let text = `${name}: restored ${report.restored.length} variable${report.restored.length === 1 ? '' : 's'} ` +
    `from version ${report.version} (saved ${localTime(report.saved_at)})`;
  text += report.restored.length ? `: ${names(report.restored)}.` : '.';
  if (report.skipped.length) {
    text += ` Not restored: ${report.skipped.map(s => `${s.name} (${s.reason})`).join('; ')}.`;
  }
  return text;
}

export function showRestoreNotice(link: KernelLink, report: IRestoreReport, openPanel: () => void): void {
  const text = restoreText(link, report);
  const options = {
    autoClose: report.skipped.length ? (false as const) : 15000,
    actions: [{ label: 'Open State Panel', callback: openPanel }]
  };
  if (report.skipped.length) {
    Notification.warning(text, options);
  } else {
    Notification.info(text, options);
  }
}
