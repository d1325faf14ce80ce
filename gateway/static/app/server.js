// One server: its worlds (settings, users and their actions), the console, bans and
// friend requests, and the container's start/stop/restart. Every control is offered only
// to the roles that may use it; destructive ones ask first; every action's answer (the
// console's reply or the gateway's error) is shown in the page's status line.
import { html, useEffect, useState, may, arg } from './lib.js';
import { Rich, plain } from './richtext.js';
import { Console } from './console.js';
import { stateOf } from './fleet.js';
import { Confirm } from './confirm.js';

const ACCESS_LEVELS = ['Private', 'LAN', 'Contacts', 'ContactsPlus', 'RegisteredUsers', 'Anyone'];
const TEMPLATES = ['Grid', 'Platform', 'Blank', 'SpaceWorld'];
/** Roles a moderator may grant; an operator may grant every role (README, *Security*). */
const MODERATOR_GRANTS = ['Guest', 'Spectator'];
const ALL_GRANTS = ['Spectator', 'Guest', 'Builder', 'Moderator', 'Admin'];

/** What an answer says, as one line for the status region. */
function said(label, reply) {
  if (reply.type === 'error') return { error: true, text: `${label}: ${reply.message}` };
  const text = (reply.output ?? reply.status ?? '').trim().split('\n').filter((l) => l && !/^\s+at /.test(l)).at(-1);
  return { error: false, text: `${label}: ${text || 'done'}` };
}

function UserRow({ user, host, role, act }) {
  const grants = may(role, 'operator') ? ALL_GRANTS : MODERATOR_GRANTS;
  const [grant, setGrant] = useState(grants[0]);
  const name = user.username;
  const moderate = may(role, 'moderator') && !host;
  return html`
    <tr>
      <th scope="row"><${Rich} text=${name} />${host ? html` <span class="muted">(this headless)</span>` : ''}</th>
      <td>${user.role ?? '-'}</td>
      <td>${user.present ? 'yes' : 'no'}</td>
      <td class="num">${user.ping ?? '-'} ms</td>
      <td class="num">${typeof user.fps === 'number' ? user.fps.toFixed(1) : '-'}</td>
      <td>${user.silenced ? 'yes' : 'no'}</td>
      <td><div class="actions">${moderate ? html`
        <button onClick=${() => act(`kick ${arg(name)}`, `Kick ${plain(name)} from this world?`)}>Kick</button>
        <button class="danger" onClick=${() => act(`ban ${arg(name)}`, `Ban ${plain(name)} from this server?`)}>Ban</button>
        ${user.silenced
          ? html`<button onClick=${() => act(`unsilence ${arg(name)}`)}>Unsilence</button>`
          : html`<button onClick=${() => act(`silence ${arg(name)}`)}>Silence</button>`}
        <button onClick=${() => act(`respawn ${arg(name)}`)}>Respawn</button>
        <select aria-label="New role for ${plain(name)}" value=${grant} onChange=${(e) => setGrant(e.currentTarget.value)}>
          ${grants.map((g) => html`<option value=${g}>${g}</option>`)}
        </select>
        <button onClick=${() => act(`role ${arg(name)} ${grant}`)}>Role</button>` : ''}</div>
      </td>
    </tr>`;
}

function Settings({ world, act }) {
  const [form, setForm] = useState(null);
  const current = {
    name: world.name ?? '', description: world.description ?? '', accessLevel: world.accessLevel ?? 'Anyone',
    maxUsers: String(world.maxUsers ?? ''), hidden: !!world.hidden, awayKick: '',
  };
  const values = form ?? current;
  const set = (key) => (e) => setForm({ ...values, [key]: e.currentTarget.type === 'checkbox' ? e.currentTarget.checked : e.currentTarget.value });
  async function apply(event) {
    event.preventDefault();
    const commands = [];
    if (values.name !== current.name && values.name.trim()) commands.push(`name ${arg(values.name.trim())}`);
    if (values.description !== current.description) commands.push(`description ${arg(values.description)}`);
    if (values.accessLevel !== current.accessLevel) commands.push(`accessLevel ${values.accessLevel}`);
    if (values.maxUsers !== current.maxUsers) commands.push(`maxUsers ${Number.parseInt(values.maxUsers, 10)}`);
    if (values.hidden !== current.hidden) commands.push(`hideFromListing ${values.hidden}`);
    if (values.awayKick !== '') commands.push(`awayKickInterval ${Number.parseFloat(values.awayKick)}`);
    for (const command of commands) await act(command);
    setForm(null);
  }
  const id = `w${world.index}`;
  return html`
    <form class="settings" onSubmit=${apply} aria-label="Settings of ${plain(world.name)}">
      <label>Name <input value=${values.name} onInput=${set('name')} /></label>
      <label>Description <input value=${values.description} onInput=${set('description')} /></label>
      <label>Access level
        <select value=${values.accessLevel} onChange=${set('accessLevel')}>
          ${ACCESS_LEVELS.map((l) => html`<option value=${l}>${l}</option>`)}
        </select></label>
      <label>Max users <input type="number" min="1" max="256" value=${values.maxUsers} onInput=${set('maxUsers')} /></label>
      <label class="check"><input type="checkbox" id="${id}-hidden" checked=${values.hidden} onChange=${set('hidden')} /> Hidden</label>
      <label>Away kick (minutes) <input type="number" min="0" step="any" value=${values.awayKick} onInput=${set('awayKick')} /></label>
      <button type="submit">Apply settings</button>
    </form>`;
}

function World({ world, role, act }) {
  const users = world.users_list ?? [];
  const worldAct = (command, confirm) => act(command, confirm, world.index);
  return html`
    <section class="world" aria-label="World ${plain(world.name)}">
      <h3><${Rich} text=${world.name} /></h3>
      <dl class="facts">
        <div><dt>Users</dt><dd>${Math.max(0, (world.users ?? 1) - 1)} users, ${Math.max(0, world.present ?? 0)} present, max ${world.maxUsers}</dd></div>
        <div><dt>Access</dt><dd>${world.accessLevel}${world.hidden ? ', hidden' : ''}</dd></div>
        <div><dt>Uptime</dt><dd>${world.uptime}</dd></div>
        <div><dt>Description</dt><dd><${Rich} text=${world.description || '-'} /></dd></div>
        <div><dt>Tags</dt><dd><${Rich} text=${(Array.isArray(world.tags) ? world.tags.join(', ') : world.tags) || '-'} /></dd></div>
        <div><dt>Session</dt><dd class="mono">${world.sessionId}</dd></div>
      </dl>
      ${may(role, 'operator') && html`
        <div class="actions">
          <button onClick=${() => worldAct('save')}>Save</button>
          <button class="danger" onClick=${() => worldAct('close', `Close the world ${plain(world.name)}? Everyone in it leaves.`)}>Close</button>
          <button class="danger" onClick=${() => worldAct('restart', `Restart the world ${plain(world.name)}? Everyone in it is disconnected.`)}>Restart</button>
        </div>`}
      <div class="table-wrap">
        <table class="users">
          <caption>Users in <${Rich} text=${world.name} /></caption>
          <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Present</th>
            <th scope="col">Ping</th><th scope="col">FPS</th><th scope="col">Silenced</th><th scope="col">Actions</th></tr></thead>
          <tbody>${users.map((u, i) => html`<${UserRow} key=${u.userId || u.username} user=${u} host=${i === 0} role=${role} act=${worldAct} />`)}</tbody>
        </table>
      </div>
      ${may(role, 'operator') && html`<details><summary>World settings</summary><${Settings} world=${world} act=${worldAct} /></details>`}
    </section>`;
}

function StartWorld({ act }) {
  const [url, setUrl] = useState('');
  const [template, setTemplate] = useState(TEMPLATES[0]);
  return html`
    <div class="start">
      <form onSubmit=${(e) => { e.preventDefault(); if (url.trim()) act(`startWorldURL ${arg(url.trim())}`); }}>
        <label>World URL <input value=${url} placeholder="resrec:///U-owner/R-record" onInput=${(e) => setUrl(e.currentTarget.value)} /></label>
        <button type="submit">Start world</button>
      </form>
      <form onSubmit=${(e) => { e.preventDefault(); act(`startWorldTemplate ${template}`); }}>
        <label>Template <select value=${template} onChange=${(e) => setTemplate(e.currentTarget.value)}>
          ${TEMPLATES.map((t) => html`<option value=${t}>${t}</option>`)}</select></label>
        <button type="submit">Start template</button>
      </form>
    </div>`;
}

function Bans({ bans, role, act }) {
  if (!bans) return html`<p class="muted">Loading bans ...</p>`;
  if (!bans.length) return html`<p>No bans.</p>`;
  return html`
    <div class="table-wrap"><table class="bans">
      <caption>Bans</caption>
      <thead><tr><th scope="col">User</th><th scope="col">User ID</th><th scope="col">Machine IDs</th><th scope="col">Actions</th></tr></thead>
      <tbody>${bans.map((b) => html`
        <tr key=${b.userId || b.username}>
          <th scope="row"><${Rich} text=${b.username} /></th><td class="mono">${b.userId}</td>
          <td class="mono">${(b.machineIds ?? []).join(', ') || '-'}</td>
          <td>${may(role, 'moderator') && html`<button onClick=${() => act(`unban ${arg(b.username)}`)}>Unban</button>`}</td>
        </tr>`)}</tbody>
    </table></div>`;
}

function Friends({ requests, act }) {
  if (!requests) return html`<p class="muted">Loading friend requests ...</p>`;
  if (!requests.length) return html`<p>No friend requests.</p>`;
  return html`<ul class="friends">${requests.map((name) => html`
    <li key=${name}><${Rich} text=${name} /> <button onClick=${() => act(`acceptFriendRequest ${arg(name)}`)}>Accept</button></li>`)}</ul>`;
}

/** One line about the server: host, usage, uptime. */
function facts(info, latest) {
  const parts = [];
  if (info?.host) parts.push(`host ${info.host}`);
  if (latest && latest.status !== 'offline') {
    if (typeof latest.cpu_usage === 'number') parts.push(`CPU ${latest.cpu_usage.toFixed(1)} %`);
    if (latest.memory_used) parts.push(`memory ${latest.memory_used}`);
    if (latest.uptime) parts.push(`up ${latest.uptime}`);
  }
  return parts.join(' · ');
}

/** status_update's recovery fields, each where the agent sent it (README, *Crash
 * recovery*): the console's health (an unhealthy console flagged), restarts, last exit. */
function Recovery({ latest }) {
  if (!latest || latest.status === 'offline') return null;
  const items = [];
  if (latest.health) {
    items.push(html`<div><dt>Console</dt><dd>${latest.health === 'unhealthy'
      ? html`<span class="state state-unhealthy">unhealthy</span> <span class="error">it stopped answering</span>`
      : latest.health}</dd></div>`);
  }
  if (typeof latest.restarts === 'number') items.push(html`<div><dt>Restarts</dt><dd>${latest.restarts}</dd></div>`);
  if (latest.exit_code != null) items.push(html`<div><dt>Last exit code</dt><dd>${latest.exit_code}</dd></div>`);
  return items.length ? html`<dl class="facts" aria-label="Recovery">${items}</dl>` : null;
}

/** The last schedule_run events of this server, newest first (README, *Schedules*). */
function ScheduleRuns({ runs }) {
  if (!runs?.length) return null;
  return html`
    <div class="table-wrap"><table class="runs">
      <caption>Schedule runs</caption>
      <thead><tr><th scope="col">Time</th><th scope="col">Schedule</th><th scope="col">Action</th>
        <th scope="col">Outcome</th><th scope="col">Detail</th></tr></thead>
      <tbody>${runs.map((run) => html`
        <tr key=${`${run.schedule}-${run.slot}`} class=${run.outcome === 'ok' ? '' : 'failed'}>
          <td class="mono">${new Date(run.slot * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</td>
          <th scope="row">${run.schedule}</th><td>${run.action}</td>
          <td><span class=${`outcome outcome-${run.outcome}`}>${run.outcome}</span></td><td>${run.detail}</td>
        </tr>`)}</tbody>
    </table></div>`;
}

export function ServerPage({ state, server, connection, role, consoleFor, back }) {
  const [tab, setTab] = useState('worlds');
  const [answer, setAnswer] = useState(null);
  const [ask, setAsk] = useState(null);
  const [friends, setFriends] = useState(null);
  const info = state.servers.get(server);
  const status = state.status.get(server);
  const worlds = state.worlds.get(server);
  const bans = state.bans.get(server);
  const current = stateOf(info, status);

  async function refresh() {
    const reply = await connection.request({ type: 'get_worlds', server });
    if (reply.type === 'error') setAnswer(said('worlds', reply));
    else state.setWorlds(server, reply.output);
  }
  async function loadBans() {
    const reply = await connection.request({ type: 'command', server, command: 'listbans' });
    if (reply.type === 'bans_update') state.setBans(server, reply.bans);
    else setAnswer(said('listbans', reply));
  }
  async function loadFriends() {
    const reply = await connection.request({ type: 'command', server, command: 'friendRequests' });
    if (reply.type === 'command_response') setFriends(reply.output.split('\n').map((l) => l.trim()).filter(Boolean));
    else setAnswer(said('friendRequests', reply));
  }
  useEffect(() => { refresh(); }, [server, state.generation]);
  useEffect(() => {
    if (tab === 'bans') loadBans();
    if (tab === 'friends') loadFriends();
  }, [tab, server, state.generation]);

  /** Run `command` (in world `world` when given), after asking `confirm` when given. */
  function act(command, confirm, world) {
    const run = async () => {
      setAnswer({ text: `${command} ...`, pending: true });
      const message = { type: 'command', server, command };
      if (world !== undefined) message.world = world;
      const reply = await connection.request(message);
      setAnswer(said(command, reply));
      if (/^(ban|unban)\b/i.test(command) || tab === 'bans') loadBans();
      if (/^acceptFriendRequest\b/i.test(command)) loadFriends();
      refresh();
    };
    if (confirm) setAsk({ text: confirm, run });
    else return run();
  }
  function container(action) {
    const run = async () => {
      setAnswer({ text: `container ${action} ...`, pending: true });
      setAnswer(said(`container ${action}`, await connection.request({ type: 'container', server, action })));
    };
    if (action === 'start') run();
    else setAsk({ text: `${action === 'stop' ? 'Stop' : 'Restart'} the headless ${server}? Every world on it goes down.`, run });
  }

  const tabs = [['worlds', 'Worlds'], ['console', 'Console'], ['bans', 'Bans']];
  if (may(role, 'admin')) tabs.push(['friends', 'Friend requests']);
  return html`
    <section class="server" aria-labelledby="server-title">
      <p><a href="#/" onClick=${(e) => { e.preventDefault(); back(); }}>All servers</a></p>
      <h2 id="server-title">${server} <span class="state state-${current}">${current}</span></h2>
      <p class="muted">${facts(info, status?.latest)}</p>
      <${Recovery} latest=${status?.latest} />
      ${may(role, 'admin') && html`
        <div class="actions" role="group" aria-label="Container">
          <button onClick=${() => container('start')}>Start</button>
          <button class="danger" onClick=${() => container('stop')}>Stop</button>
          <button class="danger" onClick=${() => container('restart')}>Restart</button>
        </div>`}
      <${Confirm} ask=${ask} done=${() => setAsk(null)} />
      <p class=${answer?.error ? 'answer error' : 'answer'} role="status" aria-live="polite">${answer?.text ?? ''}</p>
      <${ScheduleRuns} runs=${state.scheduleRuns.get(server)} />
      <nav class="tabs" aria-label="Server sections">
        ${tabs.map(([key, label]) => html`<button aria-current=${tab === key ? 'page' : undefined} onClick=${() => setTab(key)}>${label}</button>`)}
      </nav>
      ${tab === 'worlds' && html`
        ${may(role, 'operator') && html`<${StartWorld} act=${act} />`}
        ${!worlds ? html`<p class="muted">Loading worlds ...</p>` : !worlds.length ? html`<p>No world is running.</p>` : ''}
        ${(worlds ?? []).map((w) => html`<${World} key=${w.sessionId || w.index} world=${w} role=${role} act=${act} />`)}`}
      ${tab === 'console' && html`<${Console} buffer=${consoleFor(server)} canRun=${true} />`}
      ${tab === 'bans' && html`<${Bans} bans=${bans} role=${role} act=${act} />`}
      ${tab === 'friends' && html`<${Friends} requests=${friends} act=${act} />`}
    </section>`;
}
