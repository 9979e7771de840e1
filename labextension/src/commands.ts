// The commands (registered once; used by the menus, the palette, the panel and the shortcut).
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';

import { api } from './api';
import { KernelLink, PipulateModel } from './model';

export namespace CommandIDs {
  export const undo = 'pipulate:undo-last-cell';
  export const restart = 'pipulate:restart-restoring';
  export const restartNoRestore = 'pipulate:restart-without-restoring';
  export const restoreVersion = 'pipulate:restore-version';
  export const clear = 'pipulate:clear-saved-state';
  export const openPanel = 'pipulate:open-state-panel';
  export const recover = 'pipulate:recover';
  export const recoverOpen = 'pipulate:recover-open';
  export const openWebApp = 'pipulate:open-web-app';
  export const rebuild = 'pipulate:rebuild';
}

async function confirm(title: string, body: string, label: string): Promise<boolean> {
  const result = await showDialog({
    title, body, buttons: [Dialog.cancelButton(), Dialog.warnButton({ label })]
  });
  return result.button.accept;
}

function fail(error: unknown): void {
  Notification.error(error instanceof Error ? error.message : String(error), { autoClose: 10000 });
}

export function registerCommands(
  app: JupyterFrontEnd, model: PipulateModel, openPanel: () => void, showRecovery: () => void
): void {
  const { commands } = app;
  const current = (): KernelLink | null => model.current;
  const hasNotebook = () => current() !== null;
  const hasKernel = () => !!current()?.pipulate;

  commands.addCommand(CommandIDs.undo, {
    label: 'Undo Last Cell (Variables)',
    caption: 'Bring back the variables as they were before the last cell that changed them',
    isEnabled: hasKernel,
    execute: async () => {
      try {
        const reply = await current()!.action('undo');
        (reply.ok ? Notification.success : Notification.warning)(reply.message, { autoClose: 8000 });
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.restart, {
    label: 'Restart Kernel (Restoring State)…',
    caption: 'Restart the kernel; its variables come back from the latest saved version',
    isEnabled: hasNotebook,
    execute: async () => {
      const link = current()!;
      const v = link.status?.version;
      if (await confirm('Restart Kernel?',
        `The kernel restarts. Its variables come back from the latest saved version${v ? ` (${v})` : ''}; ` +
        'a notice says what was restored and what was not.', 'Restart')) {
        await link.panel.sessionContext.restartKernel();
      }
    }
  });

  commands.addCommand(CommandIDs.restartNoRestore, {
    label: 'Restart Kernel without Restoring State…',
    caption: 'Restart with an empty namespace; the saved versions are kept',
    isEnabled: hasNotebook,
    execute: async () => {
      const link = current()!;
      if (!(await confirm('Restart without Restoring State?',
        'The kernel restarts with no variables. The saved versions are kept: the next restart, ' +
        'or Restore State Version…, brings them back.', 'Restart'))) {
        return;
      }
      try {
        await api.skipRestore(link.path);
        await link.panel.sessionContext.restartKernel();
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.restoreVersion, {
    label: args => (args.version ? `Restore Version ${args.version}` : 'Restore State Version…'),
    caption: 'Bring a saved version of the variables back into the running kernel',
    isEnabled: hasKernel,
    execute: async args => {
      const link = current()!;
      let version = args.version as number | undefined;
      try {
        if (!version) {
          const state = await api.state(link.path);
          if (!state.versions.length) {
            Notification.info('Nothing is saved for this notebook yet.', { autoClose: 5000 });
            return;
          }
          const items = state.versions.map(v => `${v.version}: ${new Date(v.saved_at).toLocaleString()}, ` +
            `${v.variable_count} variables${v.cell ? ` - ${v.cell}` : ''}`);
          const picked = await InputDialog.getItem({ title: 'Restore State Version', items, okLabel: 'Restore' });
          if (!picked.button.accept || !picked.value) {
            return;
          }
          version = parseInt(picked.value, 10);
        } else if (!(await confirm(`Restore Version ${version}?`,
          `The variables of version ${version} replace those of the same names in the kernel; ` +
          'the result is saved as a new version.', 'Restore'))) {
          return;
        }
        const reply = await link.action('restore', { version });
        (reply.ok ? Notification.success : Notification.error)(reply.message, { autoClose: 8000 });
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.clear, {
    label: 'Clear Saved State…',
    caption: 'Forget every saved version of this notebook\'s variables',
    isEnabled: hasNotebook,
    execute: async () => {
      const link = current()!;
      if (!(await confirm('Clear Saved State?',
        `Every saved version of the variables of ${link.panel.context.localPath} is deleted. ` +
        'The running kernel keeps its variables.', 'Clear'))) {
        return;
      }
      try {
        const result = await api.clear(link.path);
        Notification.info(result.cleared ? 'The saved state was cleared.' : 'There was no saved state.', { autoClose: 5000 });
        openPanel();
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.openPanel, { label: 'Show Kernel State Panel', execute: openPanel });
  commands.addCommand(CommandIDs.recover, {
    label: 'Recover Lost Code…',
    caption: 'History sessions, saved notebook versions and checkpoints, opened as a new notebook',
    isEnabled: hasNotebook,
    execute: showRecovery
  });

  commands.addCommand(CommandIDs.recoverOpen, {
    label: 'Open Recovered Notebook',
    isEnabled: hasNotebook,
    execute: async args => {
      try {
        const opened = await api.open(current()!.path, String(args.source), String(args.ref));
        await commands.execute('docmanager:open', { path: opened.path });
        Notification.success(`Opened ${opened.path}, recovered from ${opened.recovered_from}.`, { autoClose: 8000 });
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.rebuild, {
    label: 'Rebuild Variables That Could Not Be Stored',
    caption: 'Run again the cells that made them (%state rebuild): they may act outside the kernel',
    isEnabled: hasKernel,
    execute: async () => {
      try {
        const reply = await current()!.action('rebuild');
        (reply.ok ? Notification.success : Notification.warning)(reply.message, { autoClose: 10000 });
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addCommand(CommandIDs.openWebApp, {
    label: 'Pipulate Web App',
    caption: 'Open the workstation\'s web app in a new browser tab',
    execute: async () => {
      try {
        const info = await api.info();
        if (!info.web_app_url) {
          throw new Error('No web app runs beside this JupyterLab (start both with `pipulate up`).');
        }
        window.open(info.web_app_url, '_blank', 'noopener');
      } catch (error) {
        fail(error);
      }
    }
  });

  commands.addKeyBinding({ command: CommandIDs.undo, keys: ['Accel Alt Z'], selector: '.jp-Notebook' });
}
