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
  const ready = new Set((report.rebuildable ?? []).map(r => r.name));
  const lost = report.skipped.filter(s => !ready.has(s.name));
  if (lost.length) {
    // JupyterLab cuts a notification's text at 140 characters: the reasons a rebuild was
    // refused are in the panel.
    text += ` Not restored: ${lost.map(s => `${s.name} (${s.reason})`).join('; ')}.`;
  }
  if (ready.size) {
    text += ` Not stored, but their cells can run again: ${report.rebuildable!.map(r => `${r.name} (${r.cells})`).join('; ')}.`;
  }
  return text;
}

export function showRestoreNotice(
  link: KernelLink, report: IRestoreReport, openPanel: () => void, rebuild: () => void
): void {
  const text = restoreText(link, report);
  const actions = [{ label: 'Open State Panel', callback: openPanel }];
  if (report.rebuildable?.length) {
    // Running cells again may act outside the kernel: only when the user asks.
    actions.unshift({ label: 'Rebuild', callback: rebuild });
  }
  const options = { autoClose: report.skipped.length ? (false as const) : 15000, actions };
  if (report.skipped.length) {
    Notification.warning(text, options);
  } else {
    Notification.info(text, options);
  }
}
