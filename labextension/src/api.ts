// The server extension's endpoints (pipulate/jupyter/server/): JSON in and out.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IVariable {
  name: string;
  type: string;
  size: number;
  format: string;
  alias_of?: string;
}

export interface ISkipped {
  name: string;
  reason: string;
  rebuild?: { cells: { label: string }[] };  // its cells can run again (%state rebuild)
  rebuild_refused?: string;  // why they cannot
}

export interface IVersion {
  version: number;
  saved_at: string;
  variable_count: number;
  size_bytes: number;
  cell: string;
}

export interface IState {
  notebook: string;
  name: string;
  has_saved_state: boolean;
  saved_at: string | null;
  variable_count: number;
  file_size_bytes: number;
  versions: IVersion[];
  current: { version: number; saved_at: string; variables: IVariable[]; skipped: ISkipped[] } | null;
  next_restore: number | null;
  large_state_bytes: number;
}

export interface IDiff {
  from: number;
  to: number;
  added: string[];
  modified: string[];
  deleted: string[];
}

export interface IRecoverable {
  ref: string;
  start?: string | null;
  saved_at?: string;
  cells?: number;
  first_line?: string;
  score?: number | null;
  why?: string;
  size?: number;
  notebook?: string;
  status?: string;
  detail?: string;
}

export interface IRecovery {
  sessions: IRecoverable[];
  versions: IRecoverable[];
  checkpoints: IRecoverable[];
  notes: string[];
}

export interface IInfo {
  web_app_url: string | null;
  large_state_bytes: number;
}

export async function request<T>(
  route: string,
  method = 'GET',
  query: Record<string, string | number> = {},
  body?: unknown
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const params = Object.entries(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
  const url = URLExt.join(settings.baseUrl, 'pipulate', route) + (params ? `?${params}` : '');
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
  }
  const response = await ServerConnection.makeRequest(url, init, settings);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(data.message || `${response.status} ${response.statusText}`);
  }
  return data as T;
}

export const api = {
  state: (path: string, version?: number) =>
    request<IState>('state', 'GET', version ? { path, version } : { path }),
  clear: (path: string) => request<{ cleared: boolean }>('state', 'DELETE', { path }),
  diff: (path: string, a: number, b: number) => request<IDiff>('state/diff', 'GET', { path, a, b }),
  skipRestore: (path: string) => request<unknown>('state/skip-restore', 'POST', {}, { path }),
  recovery: (path: string) => request<IRecovery>('recover', 'GET', { path }),
  open: (path: string, source: string, ref: string) =>
    request<{ path: string; recovered_from: string }>('recover/open', 'POST', {}, { path, source, ref }),
  info: () => request<IInfo>('info')
};

export function humanBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '-';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function ago(stamp: string | null | undefined): string {
  if (!stamp) {
    return '-';
  }
  const seconds = Math.max(0, (Date.now() - new Date(stamp).getTime()) / 1000);
  if (seconds < 90) {
    return `${Math.round(seconds)} s ago`;
  }
  if (seconds < 5400) {
    return `${Math.round(seconds / 60)} min ago`;
  }
  if (seconds < 2 * 86400) {
    return `${(seconds / 3600).toFixed(1)} h ago`;
  }
  return `${Math.round(seconds / 86400)} days ago`;
}

export function localTime(stamp: string | null | undefined): string {
  return stamp ? new Date(stamp).toLocaleString() : '-';
}
