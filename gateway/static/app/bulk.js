// One command for many servers: the fleet page's "Command for these servers". It reaches
// exactly the servers the fleet list shows under its current filters (named on screen
// before anything is sent), as one bulk `command` (README, *Bulk commands*) naming them,
// asks first for anything that is not read-only, then shows each server's own answer as it
// comes and the `bulk_done` summary. The gateway checks the role per server, so a viewer
// may run read-only commands and sees every other one refused server by server.
import { html, useState } from './lib.js';
import { Confirm } from './confirm.js';

/** Console commands any role may run (contracts/permissions.py, the viewer's entries);
 * everything else asks for confirmation first. tests/unit/gateway/test_dashboard.py keeps
 * this equal to the contracts' table. */
export const READ_ONLY = new Set([
  'help', 'worlds', 'status', 'sessionurl', 'sessionid', 'copysessionurl', 'copysessionid',
  'users', 'listbans', 'version', 'debugworldstate',
]);
/** Server ids per request: the gateway takes at most 64 patterns in one bulk request; a
 * longer list goes as several requests, one after the other (so `bulk_concurrency` still
 * bounds how many servers are busy at once). */
const PATTERNS_PER_REQUEST = 64;
/** Server names spelled out in the "reaches" line before it says "and N more". */
const NAMED = 8;

/** Whether `command` only reads (its first word, as the gateway reads it). */
export function readOnly(command) {
  return READ_ONLY.has(command.trim().split(/\s+/, 1)[0].toLowerCase());
}

function names(servers) {
  const shown = servers.slice(0, NAMED).join(', ');
  return servers.length > NAMED ? `${shown} and ${servers.length - NAMED} more` : shown;
}

/** `results` of bulk_done as one line: "2 ok; forbidden: beta, gamma". */
export function summary(results) {
  const byCode = new Map();
  for (const [server, result] of Object.entries(results).sort()) {
    byCode.set(result, [...(byCode.get(result) ?? []), server]);
  }
  const parts = [];
  if (byCode.has('ok')) parts.push(`${byCode.get('ok').length} ok`);
  for (const [code, servers] of byCode) if (code !== 'ok') parts.push(`${code}: ${servers.join(', ')}`);
  return parts.join('; ') || 'no server answered';
}

/** What one server's reply says, as text. */
function answerOf(reply) {
  switch (reply.type) {
    case 'command_response': return reply.output.trim() || '(done, no output)';
    case 'bans_update': return `${reply.bans.length} bans`;
    case 'error': return reply.message;
    default: return reply.status ?? reply.type;
  }
}

export function FleetCommand({ servers, connection }) {
  const [command, setCommand] = useState('');
  const [ask, setAsk] = useState(null);
  const [run, setRun] = useState(null); // {command, servers, answers, done, error}

  async function send(line, targets) {
    let current = { command: line, servers: targets, answers: [], done: null, errors: [] };
    const show = (change) => { current = { ...current, ...change }; setRun(current); };
    show({});
    const results = {};
    for (let i = 0; i < targets.length; i += PATTERNS_PER_REQUEST) {
      const chunk = targets.slice(i, i + PATTERNS_PER_REQUEST);
      const last = await connection.bulk({ type: 'command', command: line, servers: chunk }, (reply) => {
        show({ answers: [...current.answers, reply] });
      });
      if (last.type === 'bulk_done') Object.assign(results, last.results);
      else show({ errors: [...current.errors, last.message] }); // refused whole: nothing ran
    }
    show({ done: results });
  }

  /** The status line: progress, then the summary and any request refused whole. */
  function said() {
    if (!run.done) return `${run.command} on ${run.servers.length} servers ...`;
    const parts = Object.keys(run.done).length || !run.errors.length ? [summary(run.done)] : [];
    return `${run.command}: ${[...parts, ...run.errors].join('; ')}`;
  }

  function submit(event) {
    event.preventDefault();
    const line = command.trim();
    if (!line || !servers.length || (run && !run.done)) return;
    const targets = [...servers];
    if (readOnly(line)) {
      send(line, targets);
    } else {
      setAsk({
        text: `Run "${line}" on ${targets.length} server${targets.length === 1 ? '' : 's'} (${names(targets)})?`,
        run: () => send(line, targets),
      });
    }
  }

  const busy = !!run && !run.done;
  return html`
    <section class="bulk" aria-labelledby="bulk-title">
      <h3 id="bulk-title">Command for the servers shown</h3>
      <p id="bulk-reach">${servers.length
        ? `Reaches the ${servers.length} server${servers.length === 1 ? '' : 's'} the filters show: ${names(servers)}.`
        : 'No server is shown: change the filters to choose where it runs.'}</p>
      <form class="command" onSubmit=${submit}>
        <label for="bulk-command">Command for these servers</label>
        <input id="bulk-command" value=${command} autocomplete="off" spellcheck="false"
          aria-describedby="bulk-reach" placeholder="status, users, save ..."
          onInput=${(e) => setCommand(e.currentTarget.value)} />
        <button type="submit" disabled=${busy || !servers.length}>Run on these servers</button>
      </form>
      <${Confirm} ask=${ask} done=${() => setAsk(null)} />
      ${run && html`
        <p class=${run.errors.length ? 'answer error' : 'answer'} role="status" aria-live="polite">${said()}</p>
        <div class="table-wrap"><table class="answers">
          <caption>Answers to ${run.command}</caption>
          <thead><tr><th scope="col">Server</th><th scope="col">Result</th><th scope="col">Answer</th></tr></thead>
          <tbody>${run.answers.map((reply, i) => html`
            <tr key=${`${reply.server}-${i}`} class=${reply.type === 'error' ? 'failed' : ''}>
              <th scope="row">${reply.server}</th>
              <td>${reply.type === 'error' ? reply.code : 'ok'}</td>
              <td><pre class="output">${answerOf(reply)}</pre></td>
            </tr>`)}</tbody>
        </table></div>`}
    </section>`;
}
