// The live console of one server: its output as the agent numbered it (seq, epoch), the
// lines missed while disconnected fetched with get_output `since`, a search, and a
// command line with its history. Lines are DOM text nodes appended as they come (no
// markup is ever parsed); ANSI colour sequences become classes.
import { html, useEffect, useRef, useState } from './lib.js';

/** Lines kept per console, oldest dropped first; the agent's own ring holds 10,000. */
export const SCROLLBACK = 5000;
/** Lines asked for when a console opens. */
const FIRST_PAGE = 1000;
/** Pages of get_output one catch-up may read (each up to 1 MiB) before it gives up. */
const MAX_PAGES = 20;
/** Live lines held while a catch-up runs; past it the oldest go (the catch-up has them). */
const MAX_HELD = 20_000;
/** Milliseconds before live lines may start another read after one failed (a server
 * offline, a rate limit): a chattering console must not turn into a request storm. */
const RETRY_AFTER = 2000;
/** Commands kept for the arrow keys, in this page only (a command may hold a password). */
const HISTORY = 100;

// An escape sequence: CSI (SGR when it ends in "m"), OSC (up to BEL or ST), or a
// two-character one. Only SGR colours are kept, as classes; the rest are dropped.
const ESCAPE = /\x1b(?:\[([0-9;?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** `text` as styled runs: `[{text, classes}]`, ANSI SGR colours turned into classes,
 * other escape sequences and control characters (but TAB) removed. */
export function ansi(text) {
  const runs = [];
  let classes = [];
  let last = 0;
  const push = (piece) => {
    const clean = piece.replace(CONTROL, '');
    if (clean) runs.push({ text: clean, classes });
  };
  for (const match of text.matchAll(ESCAPE)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] !== 'm') continue;
    for (const code of (match[1] || '0').split(';').map(Number)) {
      if (code === 0) classes = [];
      else if (code === 1) classes = [...classes, 'ansi-bold'];
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        classes = [...classes.filter((c) => !c.startsWith('ansi-fg')), `ansi-fg${code}`];
      }
    }
  }
  push(text.slice(last));
  return runs;
}

/** A class for lines worth telling apart at a glance (engine log lines, stack traces,
 * errors); '' for the rest. */
function kind(text) {
  if (/^\s+at /.test(text) || /^(SIGNALR:|Running refresh on:|Updated: )/.test(text)) return 'dim';
  if (/^(Unknown command|User not found|World index out of range|Invalid |There's no )/.test(text)) return 'bad';
  return '';
}

/** One server's output, numbered by the agent, kept in order without gaps or repeats. */
export class ConsoleBuffer {
  constructor(server, connection) {
    this.server = server;
    this.connection = connection;
    this.lines = []; // {seq, text, mark}
    this.epoch = null;
    this.last = null; // the last seq shown
    this.busy = false;
    this.held = [];
    this.listeners = new Set();
    this.problem = '';
    this.retryAt = 0; // after a failed read, live lines start another only from then on
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(added, reset) {
    for (const listener of this.listeners) listener(added, reset);
  }

  /** Live lines from container_output(_batch): shown at once when they follow the last
   * line shown, else held while the missing ones are read (or the history, at first). */
  feed(epoch, lines) {
    const follows = !this.busy && this.last !== null && epoch === this.epoch
      && !(lines.length && lines[0].seq > this.last + 1);
    if (follows) {
      this.append(lines.filter((l) => l.seq > this.last));
      return;
    }
    this.held.push(...lines.map((l) => ({ ...l, epoch })));
    if (this.held.length > MAX_HELD) this.held.splice(0, this.held.length - MAX_HELD);
    if (!this.busy && Date.now() >= this.retryAt) this.catchUp();
  }

  append(lines, mark = '') {
    if (!lines.length && !mark) return;
    const added = lines.map((l) => ({ seq: l.seq, text: l.output }));
    if (mark) added.unshift({ seq: null, text: mark, mark: true });
    if (lines.length) this.last = lines.at(-1).seq;
    this.lines.push(...added);
    if (this.lines.length > SCROLLBACK) this.lines.splice(0, this.lines.length - SCROLLBACK);
    this.emit(added, false);
  }

  /** Read what was missed (everything when nothing was shown yet), then the held lines. */
  async catchUp() {
    if (this.busy) return;
    this.busy = true;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const ask = { type: 'get_output', server: this.server };
        if (this.last === null) ask.limit = FIRST_PAGE;
        else Object.assign(ask, { since: this.last, epoch: this.epoch });
        const reply = await this.connection.request(ask);
        if (reply.type !== 'output_history') {
          this.problem = `Could not load the console's history: ${reply.message ?? reply.type}`;
          this.retryAt = Date.now() + RETRY_AFTER;
          this.emit([], false);
          return;
        }
        this.problem = '';
        let mark = '';
        if (reply.reset && this.last !== null) {
          mark = '--- the agent restarted: its output starts again here ---';
        }
        if (reply.reset || this.last === null) this.last = -1;
        this.epoch = reply.epoch;
        this.append(reply.lines.filter((l) => l.seq > this.last), mark);
        if (this.last === -1) this.last = 0;
        if (reply.complete) break;
      }
    } finally {
      this.busy = false;
    }
    const held = this.held.filter((l) => l.epoch === this.epoch && l.seq > this.last);
    const other = this.held.some((l) => l.epoch !== this.epoch);
    this.held = [];
    held.sort((a, b) => a.seq - b.seq);
    if (other || (held.length && held[0].seq > this.last + 1)) {
      this.held = held; // still a gap (or a new epoch arrived meanwhile): read again
      queueMicrotask(() => this.catchUp());
      return;
    }
    this.append(held);
  }
}

function lineElement(line) {
  const element = document.createElement('div');
  element.className = line.mark ? 'line mark' : `line ${kind(line.text)}`;
  if (line.seq != null) element.dataset.seq = String(line.seq);
  for (const run of ansi(line.text)) {
    if (run.classes.length) {
      const span = document.createElement('span');
      span.className = run.classes.join(' ');
      span.textContent = run.text;
      element.append(span);
    } else {
      element.append(document.createTextNode(run.text));
    }
  }
  return element;
}

/** The console region, the search and the command line for `buffer`. */
export function Console({ buffer, canRun }) {
  const region = useRef(null);
  const [query, setQuery] = useState('');
  const [found, setFound] = useState({ total: 0, at: -1 });
  const [answer, setAnswer] = useState(null);
  const [command, setCommand] = useState('');
  const history = useRef({ items: [], at: 0 });

  useEffect(() => {
    const box = region.current;
    box.replaceChildren(...buffer.lines.map(lineElement));
    box.scrollTop = box.scrollHeight;
    return buffer.subscribe((added) => {
      const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      box.append(...added.map(lineElement));
      while (box.childElementCount > SCROLLBACK) box.firstElementChild.remove();
      if (follow) box.scrollTop = box.scrollHeight;
    });
  }, [buffer]);

  function search(step) {
    const box = region.current;
    const needle = query.trim().toLowerCase();
    const hits = [];
    for (const element of box.children) {
      element.classList.remove('hit', 'hit-current');
      if (needle && element.textContent.toLowerCase().includes(needle)) {
        element.classList.add('hit');
        hits.push(element);
      }
    }
    if (!hits.length) {
      setFound({ total: 0, at: -1 });
      return;
    }
    let at = found.at + step;
    if (step === 0 || at < 0 || at >= hits.length) at = step < 0 ? hits.length - 1 : step === 0 ? hits.length - 1 : 0;
    hits[at].classList.add('hit-current');
    hits[at].scrollIntoView({ block: 'nearest' });
    setFound({ total: hits.length, at });
  }

  async function send(event) {
    event.preventDefault();
    const text = command.trim();
    if (!text) return;
    const items = history.current.items;
    if (items.at(-1) !== text) items.push(text);
    if (items.length > HISTORY) items.shift();
    history.current.at = items.length;
    setCommand('');
    setAnswer({ pending: true, text: `Running ${text} ...` });
    const reply = await buffer.connection.request({ type: 'command', server: buffer.server, command: text });
    if (reply.type === 'error') setAnswer({ error: true, text: `${text}: ${reply.message}` });
    else setAnswer({ text: `${text}: done${reply.outcome ? ` (${reply.outcome})` : ''}` });
  }

  function recall(event) {
    const state = history.current;
    if (event.key !== 'ArrowUp' && event.key !== 'ArrowDown') return;
    event.preventDefault();
    state.at = Math.max(0, Math.min(state.items.length, state.at + (event.key === 'ArrowUp' ? -1 : 1)));
    setCommand(state.items[state.at] ?? '');
  }

  return html`
    <section class="console-panel" aria-label="Console of ${buffer.server}">
      <form class="search" role="search" onSubmit=${(e) => { e.preventDefault(); search(1); }}>
        <label>Search console
          <input type="search" value=${query} onInput=${(e) => setQuery(e.currentTarget.value)} />
        </label>
        <button type="button" onClick=${() => search(-1)}>Previous match</button>
        <button type="submit">Next match</button>
        <span class="muted" aria-live="polite">${found.total ? `${found.at + 1} of ${found.total}` : query ? 'no match' : ''}</span>
      </form>
      ${buffer.problem && html`<p class="error" role="alert">${buffer.problem}</p>`}
      <div class="console" role="log" aria-label="Console" tabindex="0" ref=${region}></div>
      ${canRun && html`
        <form class="command" onSubmit=${send}>
          <label for="command-${buffer.server}">Command</label>
          <input id="command-${buffer.server}" autocomplete="off" spellcheck="false"
            value=${command} onInput=${(e) => setCommand(e.currentTarget.value)} onKeyDown=${recall} />
          <button type="submit">Run</button>
        </form>`}
      ${answer && html`<p class=${answer.error ? 'error' : 'muted'} role="status">${answer.text}</p>`}
    </section>`;
}
