// Pipulate in JupyterLab: one plugin per concern, sharing the kernel links (model.ts).
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { api } from './api';
import { CommandIDs, registerCommands } from './commands';
import { IPipulateModel, PipulateModel } from './model';
import { showRestoreNotice } from './notice';
import { StatePanel } from './panel';
import { StateStatus } from './statusbar';

const PANEL_ID = 'pipulate-state-panel';

export const stateIcon = new LabIcon({
  name: 'pipulate:state',
  svgstr: '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><g class="jp-icon3" fill="#616161">' +
    '<path d="M12 2C7.6 2 4 3.3 4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5c0-1.7-3.6-3-8-3zm0 2c3.9 0 6 1.1 6 1s-2.1 1-6 1-6-.9-6-1 ' +
    '2.1-1 6-1zM6 7.4C7.5 8 9.6 8.3 12 8.3s4.5-.3 6-.9V12c0 .1-2.1 1-6 1s-6-.9-6-1V7.4zm0 7c1.5.6 3.6.9 6 .9s4.5-.3 ' +
    '6-.9V19c0 .1-2.1 1-6 1s-6-.9-6-1v-4.6z"/></g></svg>'
});

function openPanel(app: JupyterFrontEnd): void {
  app.shell.activateById(PANEL_ID);
}

const modelPlugin: JupyterFrontEndPlugin<PipulateModel> = {
  id: 'pipulate-jupyterlab:model',
  description: 'The pipulate.state comm of each notebook\'s kernel.',
  autoStart: true,
  requires: [INotebookTracker],
  provides: IPipulateModel,
  activate: (_: JupyterFrontEnd, tracker: INotebookTracker) => new PipulateModel(tracker)
};

const statusPlugin: JupyterFrontEndPlugin<void> = {
  id: 'pipulate-jupyterlab:status',
  description: 'The saved version, variables, size and age of the active notebook\'s state.',
  autoStart: true,
  requires: [IPipulateModel, IStatusBar],
  activate: (app: JupyterFrontEnd, model: PipulateModel, statusBar: IStatusBar) => {
    let large = 1024 ** 3;
    const item = new StateStatus(model, () => large, () => openPanel(app));
    api.info().then(info => { large = info.large_state_bytes; item.render(); }).catch(() => undefined);
    statusBar.registerStatusItem('pipulate-jupyterlab:status', {
      item, align: 'left', rank: 5  // empty when no notebook is active
    });
  }
};

const noticePlugin: JupyterFrontEndPlugin<void> = {
  id: 'pipulate-jupyterlab:restore-notice',
  description: 'A notification of what came back when a notebook\'s kernel starts.',
  autoStart: true,
  requires: [IPipulateModel],
  activate: (app: JupyterFrontEnd, model: PipulateModel) => {
    model.message.connect((_, { link, data }) => {
      if (data?.type === 'restore' && data.on_start) {
        showRestoreNotice(link, data, () => openPanel(app), () => void app.commands.execute(CommandIDs.rebuild));
      }
    });
  }
};

const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'pipulate-jupyterlab:panel',
  description: 'The kernel state panel, its commands and the recovery of lost code.',
  autoStart: true,
  requires: [IPipulateModel, ILabShell],
  activate: (app: JupyterFrontEnd, model: PipulateModel, shell: ILabShell) => {
    const panel = new StatePanel(model, app.commands);
    panel.id = PANEL_ID;
    panel.title.icon = stateIcon;
    shell.add(panel, 'left', { rank: 600 });
    registerCommands(app, model, () => openPanel(app), () => {
      openPanel(app);
      void panel.showRecovery();
    });
  }
};

const menuPlugin: JupyterFrontEndPlugin<void> = {
  id: 'pipulate-jupyterlab:menu',
  description: 'Kernel menu and command palette entries.',
  autoStart: true,
  requires: [IMainMenu],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, mainMenu: IMainMenu, palette: ICommandPalette | null) => {
    mainMenu.kernelMenu.addGroup([
      { command: CommandIDs.restart },
      { command: CommandIDs.restartNoRestore },
      { command: CommandIDs.restoreVersion },
      { command: CommandIDs.undo },
      { command: CommandIDs.clear }
    ], 1);
    mainMenu.fileMenu.addGroup([{ command: CommandIDs.recover }], 40);
    // The Help menu's "Pipulate web app" comes from `pipulate up`'s per-start settings
    // (pipulate/jupyter/links.py), which works even with this extension disabled: not twice.
    for (const command of [CommandIDs.undo, CommandIDs.restart, CommandIDs.restartNoRestore, CommandIDs.restoreVersion,
      CommandIDs.clear, CommandIDs.openPanel, CommandIDs.recover, CommandIDs.openWebApp, CommandIDs.rebuild]) {
      palette?.addItem({ command, category: 'Pipulate' });
    }
  }
};

const launcherPlugin: JupyterFrontEndPlugin<void> = {
  id: 'pipulate-jupyterlab:launcher',
  description: 'A launcher card that opens the workstation\'s web app.',
  autoStart: true,
  optional: [ILauncher],
  activate: (app: JupyterFrontEnd, launcher: ILauncher | null) => {
    launcher?.add({ command: CommandIDs.openWebApp, category: 'Other', rank: 0, kernelIconUrl: undefined });
    void app;
  }
};

export default [modelPlugin, statusPlugin, noticePlugin, panelPlugin, menuPlugin, launcherPlugin];
