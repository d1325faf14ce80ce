// The fleet: every server this token may see, its state, host, CPU and memory with
// sparklines from status_update, users and worlds; filtered by text and by state; and one
// command for the servers the filters show (bulk.js).
import { html, useState } from './lib.js';
import { FleetCommand } from './bulk.js';

export const STATES = ['running', 'starting', 'restarting', 'crashloop', 'exited', 'offline'];

/** A server's state as the fleet list shows it. */
export function stateOf(info, status) {
  if (!info || info.online === false) return 'offline';
  const latest = status?.latest?.status;
  return (latest && latest !== 'offline' ? latest : info.status || 'unknown').toLowerCase();
}

/** A small line chart of `values` (0..100), drawn as SVG through Preact (no markup). */
export function Sparkline({ values, label }) {
  const width = 80;
  const height = 20;
  if (!values.length) return html`<span class="muted">-</span>`;
  const top = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - (v / top) * (height - 2) - 1).toFixed(1)}`).join(' ');
  return html`<svg class="spark" viewBox="0 0 ${width} ${height}" width=${width} height=${height} role="img" aria-label=${label}>
    <polyline points=${points} /></svg>`;
}

function percent(value) {
  return typeof value === 'number' ? `${value.toFixed(1)} %` : '-';
}

export function Fleet({ state, open, connection }) {
  const [text, setText] = useState('');
  const [only, setOnly] = useState('');
  const rows = [...state.servers.values()]
    .map((info) => {
      const status = state.status.get(info.server);
      const worlds = state.worlds.get(info.server);
      return {
        info, status, state: stateOf(info, status),
        users: worlds ? worlds.reduce((n, w) => n + Math.max(0, (w.users ?? 1) - 1), 0) : info.users,
        worlds: worlds ? worlds.length : info.worlds,
      };
    })
    .filter((row) => !only || row.state === only)
    .filter((row) => {
      const needle = text.trim().toLowerCase();
      return !needle || [row.info.server, row.info.host, row.info.agent, row.state]
        .some((field) => String(field ?? '').toLowerCase().includes(needle));
    })
    .sort((a, b) => a.info.server.localeCompare(b.info.server));
  return html`
    <section aria-labelledby="fleet-title">
      <h2 id="fleet-title">Fleet</h2>
      <div class="filters">
        <label>Filter <input type="search" value=${text} onInput=${(e) => setText(e.currentTarget.value)} /></label>
        <label>State
          <select value=${only} onChange=${(e) => setOnly(e.currentTarget.value)}>
            <option value="">all</option>
            ${STATES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select>
        </label>
        <span class="muted">${rows.length} of ${state.servers.size} servers</span>
      </div>
      <div class="table-wrap">
        <table class="fleet">
          <caption class="visually-hidden">Servers</caption>
          <thead><tr>
            <th scope="col">Server</th><th scope="col">State</th><th scope="col">Host</th>
            <th scope="col">CPU</th><th scope="col">Memory</th>
            <th scope="col">Users</th><th scope="col">Worlds</th>
          </tr></thead>
          <tbody>
            ${rows.map((row) => html`
              <tr key=${row.info.server} data-state=${row.state}>
                <th scope="row"><a href="#/server/${encodeURIComponent(row.info.server)}" onClick=${(e) => { e.preventDefault(); open(row.info.server); }}>${row.info.server}</a></th>
                <td data-label="State"><span class="state state-${row.state}">${row.state}</span>${row.status?.latest?.health === 'unhealthy' && row.state !== 'offline'
                  ? html` <span class="state state-unhealthy">unhealthy</span>` : ''}</td>
                <td data-label="Host">${[row.info.host, row.info.agent].filter(Boolean).filter((v, i, a) => a.indexOf(v) === i).join(' / ') || '-'}</td>
                <td class="num" data-label="CPU"><${Sparkline} values=${row.status?.cpu ?? []} label="CPU of ${row.info.server}" /> ${percent(row.status?.latest?.cpu_usage)}</td>
                <td class="num" data-label="Memory"><${Sparkline} values=${row.status?.mem ?? []} label="Memory of ${row.info.server}" /> ${percent(row.status?.latest?.memory_percent)}</td>
                <td class="num" data-label="Users">${row.users ?? '-'}</td>
                <td class="num" data-label="Worlds">${row.worlds ?? '-'}</td>
              </tr>`)}
          </tbody>
        </table>
      </div>
      ${!state.servers.size && html`<p class="muted">No server yet: agents announce theirs every few seconds.</p>`}
      ${connection && html`<${FleetCommand} servers=${rows.map((row) => row.info.server)} connection=${connection} />`}
    </section>`;
}
