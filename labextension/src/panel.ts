// The kernel state panel (left sidebar): variables, skipped ones, versions, diff, actions,
// and recovery, for the active notebook. Actions run the extension's commands.
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { ago, api, humanBytes, IRecoverable, ISkipped, IState, localTime } from './api';
import { PipulateModel } from './model';
import { CommandIDs } from './commands';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function button(label: string, onClick: () => void, extra = ''): HTMLButtonElement {
  const b = el('button', { class: `jp-Button jp-mod-styled jp-mod-reject jp-pipulate-button ${extra}`, type: 'button' }, label);
  b.addEventListener('click', onClick);
  return b;
}

function table(header: string[], rows: (Node | string)[][], cls = ''): HTMLTableElement {
  return el('table', { class: `jp-pipulate-table ${cls}` },
    el('thead', {}, el('tr', {}, ...header.map(h => el('th', {}, h)))),
    el('tbody', {}, ...rows.map(r => el('tr', {}, ...r.map(c => el('td', {}, c))))));
}

export class StatePanel extends Widget {
  constructor(private model: PipulateModel, private commands: CommandRegistry) {
    super();
    this.id = 'pipulate-state-panel';
    this.addClass('jp-pipulate-panel');
    this.title.caption = 'Kernel State';
    model.activeChanged.connect(() => this.refresh());
    model.message.connect((_, { link, data }) => {
      // A finished save or a restore changes what the panel shows.
      if (link === model.current && data && (data.type === 'restore' || (data.type === 'status' && !data.saving))) {
        this.refresh();
      }
    });
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  async refresh(): Promise<void> {
    if (!this.isVisible) {
      return;
    }
    const link = this.model.current;
    if (!link) {
      this.node.replaceChildren(el('p', { class: 'jp-pipulate-empty' }, 'Open a notebook to see its kernel state.'));
      return;
    }
    try {
      this.state = await api.state(link.path);
    } catch (error) {
      this.node.replaceChildren(el('p', { class: 'jp-pipulate-error' }, String(error)));
      return;
    }
    this.render();
  }

  private render(): void {
    const s = this.state!;
    const link = this.model.current;
    const header = el('div', { class: 'jp-pipulate-header' },
      el('h2', {}, 'Kernel State'),
      el('div', { class: 'jp-pipulate-sub' }, s.name));
    const actions = el('div', { class: 'jp-pipulate-actions' },
      button('Undo Last Cell', () => this.commands.execute(CommandIDs.undo)),
      button('Restart without Restoring', () => this.commands.execute(CommandIDs.restartNoRestore)),
      button('Clear Saved State', () => this.commands.execute(CommandIDs.clear), 'jp-pipulate-danger'),
      button('Refresh', () => void this.refresh()));
    const parts: Node[] = [header];
    if (link && link.pipulate === false) {
      parts.push(el('p', { class: 'jp-pipulate-note' }, 'This notebook\'s kernel does not load pipulate: nothing of it is saved.'));
    }
    if (!s.has_saved_state || !s.current) {
      parts.push(el('p', { class: 'jp-pipulate-empty' }, 'Nothing saved yet: the variables are saved after each cell that runs without error.'));
      parts.push(actions, this.recoverySection());
      this.node.replaceChildren(...parts);
      return;
    }
    const c = s.current;
    parts.push(el('div', { class: 'jp-pipulate-summary' },
      `Version ${c.version} · saved ${localTime(c.saved_at)} (${ago(c.saved_at)}) · ${c.variables.length} variable${c.variables.length === 1 ? "" : "s"} · ${humanBytes(s.file_size_bytes)}`));
    parts.push(actions);
    parts.push(el('h3', {}, 'Variables'));
    parts.push(table(['Name', 'Type', 'Size', 'Format'], c.variables.map(v => [
      el('code', {}, v.name), v.type, humanBytes(v.size), v.alias_of ? `same object as ${v.alias_of}` : v.format])));
    if (c.skipped.length) {
      parts.push(el('h3', {}, 'Not saved'));
      const how = (k: ISkipped) => k.rebuild
        ? `${k.reason}; rebuilt by cells ${k.rebuild.cells.map(cell => cell.label).join(', ')}`
        : k.rebuild_refused ? `${k.reason}; not rebuilt: ${k.rebuild_refused}` : k.reason;
      parts.push(table(['Name', 'Why'], c.skipped.map(k => [el('code', {}, k.name), how(k)]), 'jp-pipulate-skipped'));
      if (c.skipped.some(k => k.rebuild)) {
        parts.push(button('Rebuild Not-Stored Variables', () => this.commands.execute(CommandIDs.rebuild)));
      }
    }
    parts.push(el('h3', {}, 'Versions'));
    const picks: number[] = [];
    const diffOut = el('div', { class: 'jp-pipulate-diff' });
    const compare = button('Compare Two Versions', () => void this.diff(picks, diffOut));
    compare.disabled = true;
    // One block per version (not a table row): the sidebar is narrow, and the first line of
    // the cell that made the version gets a line of its own, cut with an ellipsis.
    parts.push(el('div', { class: 'jp-pipulate-versions' }, ...s.versions.map(v => {
      const box = el('input', { type: 'checkbox', title: 'Pick two versions to compare' });
      box.addEventListener('change', () => {
        const i = picks.indexOf(v.version);
        if (box.checked && i < 0) picks.push(v.version);
        if (!box.checked && i >= 0) picks.splice(i, 1);
        compare.disabled = picks.length !== 2;
      });
      const label = `Version ${v.version}${s.next_restore === v.version ? ' (next start)' : ''}`;
      return el('div', { class: 'jp-pipulate-version' },
        el('div', { class: 'jp-pipulate-version-head' },
          el('label', {}, box, ' ', el('strong', {}, label)),
          el('span', { title: localTime(v.saved_at) }, ago(v.saved_at)),
          el('span', {}, `${v.variable_count} var${v.variable_count === 1 ? '' : 's'} · ${humanBytes(v.size_bytes)}`),
          button('Restore', () => this.commands.execute(CommandIDs.restoreVersion, { version: v.version }))),
        el('code', { class: 'jp-pipulate-cell', title: v.cell || '' }, v.cell || '(no cell recorded)'));
    })));
    parts.push(compare, diffOut, this.recoverySection());
    this.node.replaceChildren(...parts);
  }

  private async diff(picks: number[], out: HTMLElement): Promise<void> {
    const [a, b] = [...picks].sort((x, y) => x - y);
    try {
      const d = await api.diff(this.model.current!.path, a, b);
      out.replaceChildren(el('h4', {}, `Version ${a} → ${b}`),
        ...(['added', 'modified', 'deleted'] as const).map(k =>
          el('div', { class: `jp-pipulate-diff-${k}` }, el('strong', {}, `${k}: `), d[k].length ? d[k].join(', ') : '-')));
    } catch (error) {
      out.replaceChildren(el('p', { class: 'jp-pipulate-error' }, String(error)));
    }
  }

  private recoverySection(): HTMLElement {
    const box = el('div', { class: 'jp-pipulate-recovery' }, el('h3', {}, 'Recover Lost Code'));
    const list = el('div', {});
    box.append(el('p', { class: 'jp-pipulate-sub' },
      'Code from IPython\'s history, saved notebook versions and checkpoints, opened as a new notebook.'),
      button('Find Recoverable Code', () => void this.findRecoverable(list)), list);
    return box;
  }

  /** Open the recovery section's search (the "Recover Lost Code" command). */
  async showRecovery(): Promise<void> {
    await this.refresh();
    const list = this.node.querySelector('.jp-pipulate-recovery > div');
    if (list) await this.findRecoverable(list as HTMLElement);
  }

  private async findRecoverable(list: HTMLElement): Promise<void> {
    const link = this.model.current;
    if (!link) return;
    list.replaceChildren(el('p', {}, 'Searching…'));
    try {
      const found = await api.recovery(link.path);
      const open = (source: string, r: IRecoverable) =>
        button('Open', () => this.commands.execute(CommandIDs.recoverOpen, { source, ref: r.ref }));
      list.replaceChildren(
        el('h4', {}, 'History sessions'),
        found.sessions.length ? table(['Session', 'Started', 'Cells', 'First line', ''], found.sessions.map(r => [
          r.ref + (r.score ? ' ★' : ''), localTime(r.start), String(r.cells ?? ''),
          el('code', { class: 'jp-pipulate-cell', title: r.why || '' }, r.first_line || ''), open('session', r)]), 'jp-pipulate-sessions')
          : el('p', {}, found.notes.join(' ') || 'none'),
        el('h4', {}, 'Saved versions of this notebook'),
        found.versions.length ? table(['Id', 'Saved', 'Size', ''], found.versions.map(r => [
          r.ref, localTime(r.saved_at), humanBytes(r.size), open('version', r)])) : el('p', {}, 'none'),
        el('h4', {}, 'Checkpoints that differ'),
        found.checkpoints.length ? table(['Notebook', 'Saved', 'Status', ''], found.checkpoints.map(r => [
          r.notebook || '', r.saved_at || '', r.status || '', open('checkpoint', r)])) : el('p', {}, 'none'));
    } catch (error) {
      list.replaceChildren(el('p', { class: 'jp-pipulate-error' }, String(error)));
    }
  }

  private state: IState | null = null;
}
