// The kernel link of each open notebook (the `pipulate.state` comm) and the state of the
// active one, shared by the status bar, the notice, the panel and the commands.
import { NotebookPanel, INotebookTracker } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { Token } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

export const TARGET = 'pipulate.state';

export interface IStatus {
  type: 'status';
  notebook: string;
  name: string;
  version: number | null;
  variables: number | null;
  bytes: number | null;
  saved_at: string | null;
  saving: boolean;
  error: string | null;
  skipped?: string[];
}

export interface IRestoreReport {
  type: 'restore';
  on_start: boolean;
  version: number | null;
  latest?: number;
  saved_at: string | null;
  restored: string[];
  skipped: { name: string; reason: string }[];
  rebuildable?: { name: string; cells: string }[];  // not stored; their cells can run again
  not_restored?: string;
  line?: string;
}

export interface IReply {
  type: 'reply';
  action: string;
  ok: boolean;
  message: string;
}

type Message = IStatus | IRestoreReport | IReply;

/** One notebook's comm with its kernel, opened again after every (re)start. */
export class KernelLink {
  constructor(readonly panel: NotebookPanel) {
    const context = panel.sessionContext;
    context.statusChanged.connect(this._onStatus, this);
    context.kernelChanged.connect(() => {
      this._needsComm = true;
      this.pipulate = null;
      this._onStatus();
    }, this);
    this._onStatus();
  }

  /** true: a pipulate kernel answered; false: the kernel has no pipulate; null: not known yet. */
  pipulate: boolean | null = null;
  status: IStatus | null = null;

  get changed(): ISignal<KernelLink, Message | null> {
    return this._changed;
  }

  get path(): string {
    return this.panel.context.path;
  }

  /** Ask the kernel to do something; resolves with its reply. */
  action(action: string, data: Record<string, unknown> = {}): Promise<IReply> {
    const comm = this._comm;
    if (!comm || comm.isDisposed || !this.pipulate) {
      return Promise.reject(new Error('the notebook has no running pipulate kernel'));
    }
    return new Promise<IReply>(resolve => {
      this._waiting.push({ action, resolve });
      comm.send({ action, ...data });
    });
  }

  private _onStatus(): void {
    const status = this.panel.sessionContext.kernelDisplayStatus;
    if (['restarting', 'autorestarting', 'starting', 'dead', 'unknown'].includes(status)) {
      this._needsComm = true;
      if (status !== 'unknown') {
        this.status = null;
        this._changed.emit(null);
      }
      return;
    }
    if (this._needsComm && (status === 'idle' || status === 'busy')) {
      this._open();
    }
  }

  private _open(): void {
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!kernel || !kernel.handleComms) {
      return;
    }
    this._needsComm = false;
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm(TARGET);
    } catch {
      return;
    }
    this._comm = comm;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      this.pipulate = true;
      const data = msg.content.data as unknown as Message;
      if (data.type === 'status') {
        this.status = data;
      } else if (data.type === 'reply') {
        const index = this._waiting.findIndex(w => w.action === data.action);
        if (index >= 0) {
          this._waiting.splice(index, 1)[0].resolve(data);
        }
      }
      this._changed.emit(data);
    };
    comm.onClose = () => {
      // A kernel without the target closes the comm at once: not a pipulate kernel.
      if (this._comm === comm && this.pipulate !== true) {
        this.pipulate = false;
        this._changed.emit(null);
      }
    };
    comm.open({});
  }

  dispose(): void {
    Signal.clearData(this);
    this._comm?.dispose();
  }

  private _comm: Kernel.IComm | null = null;
  private _needsComm = true;
  private _waiting: { action: string; resolve: (r: IReply) => void }[] = [];
  private _changed = new Signal<KernelLink, Message | null>(this);
}

/** The links of the open notebooks, and which one is active. */
export class PipulateModel {
  constructor(readonly tracker: INotebookTracker) {
    tracker.widgetAdded.connect((_, panel) => this._add(panel));
    tracker.forEach(panel => this._add(panel));
    tracker.currentChanged.connect(() => this._activeChanged.emit(this.current));
  }

  get current(): KernelLink | null {
    const panel = this.tracker.currentWidget;
    return panel ? this._links.get(panel) ?? null : null;
  }

  /** Something the kernel of any notebook sent (a status, a restore report, a reply). */
  get message(): ISignal<PipulateModel, { link: KernelLink; data: Message | null }> {
    return this._message;
  }

  get activeChanged(): ISignal<PipulateModel, KernelLink | null> {
    return this._activeChanged;
  }

  private _add(panel: NotebookPanel): void {
    if (this._links.has(panel)) {
      return;
    }
    const link = new KernelLink(panel);
    this._links.set(panel, link);
    link.changed.connect((_, data) => this._message.emit({ link, data }));
    panel.disposed.connect(() => {
      this._links.delete(panel);
      link.dispose();
    });
  }

  private _links = new Map<NotebookPanel, KernelLink>();
  private _message = new Signal<PipulateModel, { link: KernelLink; data: Message | null }>(this);
  private _activeChanged = new Signal<PipulateModel, KernelLink | null>(this);
}

export const IPipulateModel = new Token<PipulateModel>('pipulate-jupyterlab:model');
