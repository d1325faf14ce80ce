// The dashboard: signs in through /login (the token goes into an HttpOnly cookie, never
// into storage a script can read), opens one WebSocket to /ws and renders the fleet, a
// server, its console. Everything it shows comes from the public client protocol.
import { html, render, useEffect, useState, useStore, Store } from './lib.js';
import { Connection } from './connection.js';
import { ConsoleBuffer } from './console.js';
import { Fleet } from './fleet.js';
import { ServerPage } from './server.js';

/** Points of CPU and memory kept per server for the sparklines (status every ~5 s). */
const SPARK_POINTS = 60;
/** Milliseconds between get_servers refreshes: counts and hosts change without an event. */
const SERVERS_REFRESH = 10_000;
/** Servers asked for their status at once when the list arrives. */
const FIRST_STATUS = 50;
/** schedule_run events kept per server for its page: the newest, a few days of hourly runs
 * would be too many to read; these are what an operator looks at after a slot. */
const SCHEDULE_RUNS = 20;

const store = new Store({
  identity: null, // null: asking; {open, sub, role}; {signedOut: true, error}
  conn: { phase: 'connecting', attempt: 0, retryAt: null, reason: '' },
  servers: new Map(),
  status: new Map(),
  worlds: new Map(),
  bans: new Map(),
  scheduleRuns: new Map(), // server -> its last schedule_run events, newest first
  generation: 0, // bumped on every (re)connection: pages reload what they show
  route: parseRoute(),
});
Object.assign(store.state, {
  setWorlds: (server, worlds) => store.update((s) => s.worlds.set(server, worlds)),
  setBans: (server, bans) => store.update((s) => s.bans.set(server, bans)),
});
const consoles = new Map();
let connection = null;
let refresher = null;

function parseRoute() {
  const match = /^#\/server\/([^/]+)$/.exec(location.hash);
  return match ? { page: 'server', server: decodeURIComponent(match[1]) } : { page: 'fleet' };
}
window.addEventListener('hashchange', () => store.update((s) => { s.route = parseRoute(); }));

function go(hash) {
  if (location.hash !== hash) location.hash = hash;
}

function consoleFor(server) {
  let buffer = consoles.get(server);
  if (!buffer) {
    buffer = new ConsoleBuffer(server, connection);
    consoles.set(server, buffer);
    if (connection.state.phase === 'open') buffer.catchUp();
  }
  return buffer;
}

function noteStatus(server, status) {
  store.update((s) => {
    const entry = s.status.get(server) ?? { cpu: [], mem: [], latest: null };
    entry.latest = status;
    if (status.status !== 'offline') {
      entry.cpu = [...entry.cpu, Number(status.cpu_usage) || 0].slice(-SPARK_POINTS);
      entry.mem = [...entry.mem, Number(status.memory_percent) || 0].slice(-SPARK_POINTS);
    }
    s.status.set(server, entry);
  });
}

function setServers(list) {
  const before = store.state.servers;
  store.update((s) => {
    s.servers = new Map(list.map((info) => [info.server, info]));
  });
  // a server back online: its last status said "offline"; ask for the current one, and
  // let its console read what it missed
  for (const info of list) {
    if (info.online && before.get(info.server)?.online === false && connection) {
      connection.request({ type: 'get_status', server: info.server }).then((reply) => {
        if (reply.type === 'status_update') noteStatus(reply.server, reply.status);
      });
      consoles.get(info.server)?.catchUp();
    }
  }
}

function onEvent(message) {
  switch (message.type) {
    case 'servers_update': setServers(message.servers); break;
    case 'status_update': noteStatus(message.server, message.status); break;
    case 'worlds_update': store.state.setWorlds(message.server, message.output); break;
    case 'bans_update': store.state.setBans(message.server, message.bans); break;
    case 'schedule_run':
      store.update((s) => {
        s.scheduleRuns.set(message.server, [message, ...(s.scheduleRuns.get(message.server) ?? [])].slice(0, SCHEDULE_RUNS));
      });
      break;
    case 'container_output':
      consoles.get(message.server)?.feed(message.epoch, [{ seq: message.seq, output: message.output }]);
      break;
    case 'container_output_batch':
      consoles.get(message.server)?.feed(message.epoch, message.lines);
      break;
    default: break;
  }
}

async function loadServers() {
  const reply = await connection.request({ type: 'get_servers' });
  if (reply.type !== 'servers_update') return;
  setServers(reply.servers);
  return reply.servers;
}

async function onOpen() {
  for (const buffer of consoles.values()) buffer.busy = true; // hold live lines until caught up
  store.update((s) => { s.generation += 1; });
  await connection.request({ type: 'subscribe', servers: '*', batch: true });
  for (const buffer of consoles.values()) {
    buffer.busy = false;
    buffer.catchUp();
  }
  const servers = await loadServers();
  for (const info of (servers ?? []).filter((i) => i.online).slice(0, FIRST_STATUS)) {
    connection.request({ type: 'get_status', server: info.server }).then((reply) => {
      if (reply.type === 'status_update') noteStatus(reply.server, reply.status);
    });
  }
}

/** Who this browser is to the gateway: the cookie's holder, or open mode. */
async function whoAmI() {
  try {
    const response = await fetch('/login', { headers: { Accept: 'application/json' }, cache: 'no-store' });
    const body = await response.json();
    return response.ok && body.signed_in ? body : { signedOut: true, error: '' };
  } catch {
    return null; // the gateway did not answer
  }
}

function connect(identity) {
  store.update((s) => { s.identity = identity; });
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  connection = new Connection({
    url: `${scheme}//${location.host}/ws`,
    onEvent,
    onOpen,
    onState: (conn) => {
      if (conn.phase === 'refused') signedOut(`The gateway ended this session (${conn.reason}); sign in again.`);
      else store.update((s) => { s.conn = conn; });
    },
    onRefusal: async () => {
      const who = await whoAmI();
      return who !== null && !!who.signedOut;
    },
  });
  connection.start();
  clearInterval(refresher);
  refresher = setInterval(() => { if (connection.state.phase === 'open') loadServers(); }, SERVERS_REFRESH);
}

function signedOut(error = '') {
  if (connection) connection.stop();
  connection = null;
  clearInterval(refresher);
  consoles.clear();
  store.update((s) => {
    s.identity = { signedOut: true, error };
    for (const key of ['servers', 'status', 'worlds', 'bans', 'scheduleRuns']) s[key] = new Map();
  });
}

function SignIn({ error }) {
  const [problem, setProblem] = useState(error);
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    const input = event.currentTarget.elements.token;
    const token = input.value.trim();
    if (!token) {
      setProblem('Paste a token (resofleet token issue --role viewer prints one).');
      return;
    }
    setBusy(true);
    try {
      // in a header: an address with the token would land in every proxy's access log
      const response = await fetch('/login', {
        headers: { Accept: 'application/json', Authorization: `Bearer ${token}` }, cache: 'no-store',
      });
      const body = await response.json();
      if (!response.ok) {
        setProblem(`Sign-in refused: ${body.error ?? response.status}`);
        return;
      }
      input.value = '';
      connect(body);
    } catch {
      setProblem('The gateway did not answer; try again.');
    } finally {
      setBusy(false);
    }
  }
  return html`
    <main class="signin">
      <h1>resofleet</h1>
      <form onSubmit=${submit} aria-label="Sign in">
        <label for="token">Token</label>
        <input id="token" name="token" class="secret" autocomplete="off" spellcheck="false" autocapitalize="off" />
        <button type="submit" disabled=${busy}>Sign in</button>
        ${problem && html`<p class="error" role="alert">${problem}</p>`}
      </form>
      <p class="muted">The token is kept in an HttpOnly cookie for this gateway; scripts on this page cannot read it.</p>
    </main>`;
}

function Banner({ conn }) {
  const [, tick] = useState(0);
  useEffect(() => {
    if (conn.phase !== 'waiting') return undefined;
    const timer = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, [conn.phase, conn.retryAt]);
  let text = 'Connected';
  if (conn.phase === 'connecting') text = conn.attempt ? `Reconnecting (attempt ${conn.attempt + 1}) ...` : 'Connecting ...';
  if (conn.phase === 'waiting') {
    const seconds = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
    text = `Disconnected (${conn.reason}). Reconnecting in ${seconds} s ...`;
  }
  return html`
    <p class="conn conn-${conn.phase}" role="status">${text}
      ${conn.phase === 'waiting' && html` <button onClick=${() => connection?.retry()}>Reconnect now</button>`}</p>`;
}

function App() {
  const state = useStore(store);
  const { identity } = state;
  if (identity === null) return html`<main><p role="status">Loading ...</p></main>`;
  if (identity.signedOut) return html`<${SignIn} error=${identity.error} />`;
  async function signOut() {
    try {
      const response = await fetch('/logout', { headers: { Accept: 'application/json' }, cache: 'no-store' });
      await response.json(); // read to the end: the cookie is cleared once this returns
    } finally {
      signedOut();
    }
  }
  const route = state.route;
  document.title = route.page === 'server' ? `${route.server} - resofleet` : 'Fleet - resofleet';
  return html`
    <header class="top">
      <h1><a href="#/" onClick=${(e) => { e.preventDefault(); go('#/'); }}>resofleet</a></h1>
      <span class="who">${identity.open ? 'open mode (no secret): admin' : `${identity.sub} (${identity.role})`}</span>
      ${!identity.open && html`<button onClick=${signOut}>Sign out</button>`}
    </header>
    <${Banner} conn=${state.conn} />
    <main>
      ${route.page === 'server'
        ? html`<${ServerPage} key=${route.server} state=${state} server=${route.server} connection=${connection}
            role=${identity.role} consoleFor=${consoleFor} back=${() => go('#/')} />`
        : html`<${Fleet} state=${state} connection=${connection} open=${(server) => go(`#/server/${encodeURIComponent(server)}`)} />`}
    </main>`;
}

async function boot() {
  render(html`<${App} />`, document.getElementById('root'));
  let identity = await whoAmI();
  for (let wait = 1000; identity === null; wait = Math.min(wait * 2, 15_000)) {
    await new Promise((resolve) => { setTimeout(resolve, wait); });
    identity = await whoAmI();
  }
  if (identity.signedOut) signedOut();
  else connect(identity);
}

boot();
