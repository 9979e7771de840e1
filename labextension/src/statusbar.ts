// The status bar item: the active notebook's saved version, variables, size and age.
import { Widget } from '@lumino/widgets';

import { ago, humanBytes } from './api';
import { KernelLink, PipulateModel } from './model';

export class StateStatus extends Widget {
  constructor(
    private model: PipulateModel,
    private largeBytes: () => number,
    private onClick: () => void
  ) {
    super();
    this.addClass('jp-pipulate-status');
    this.node.addEventListener('click', () => this.onClick());
    model.message.connect((_, { link }) => link === model.current && this.render());
    model.activeChanged.connect(() => this.render());
    // Only the "... ago" text is refreshed on a timer; the data come from the kernel's messages.
    this._timer = window.setInterval(() => this.render(), 10000);
    this.render();
  }

  render(): void {
    const link: KernelLink | null = this.model.current;
    const status = link?.status;
    this.removeClass('jp-pipulate-mod-warning');
    this.removeClass('jp-pipulate-mod-saving');
    this.node.title = '';
    if (!link || link.pipulate === false) {
      this.node.textContent = link ? 'State: not saved (no pipulate kernel)' : '';
      return;
    }
    if (!status) {
      this.node.textContent = 'State: …';
      return;
    }
    const parts: string[] = [];
    if (status.version === null) {
      parts.push('State: nothing saved yet');
    } else {
      parts.push(`State v${status.version}`);
      parts.push(`${status.variables ?? 0} var${status.variables === 1 ? '' : 's'}`);
      parts.push(humanBytes(status.bytes));
      parts.push(status.saving ? 'saving…' : `saved ${ago(status.saved_at)}`);
    }
    if (status.saving && status.version === null) {
      parts.push('saving…');
    }
    this.node.textContent = parts.join(' · ');
    this.node.title = 'Kernel state of this notebook (click for the panel)';
    if (status.saving) {
      this.addClass('jp-pipulate-mod-saving');
    }
    if (status.error) {
      this.addClass('jp-pipulate-mod-warning');
      this.node.textContent += ' · last save failed';
      this.node.title = `The last save failed: ${status.error}`;
    } else if (status.bytes !== null && status.bytes > this.largeBytes()) {
      this.addClass('jp-pipulate-mod-warning');
      this.node.textContent += ' · large state';
      this.node.title = `Large state: ${humanBytes(status.bytes)} (over ${humanBytes(this.largeBytes())})`;
    }
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  private _timer: number;
}
