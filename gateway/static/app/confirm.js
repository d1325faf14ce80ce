// A confirmation asked in the page (never window.confirm, which a test or a kiosk cannot
// answer by role): the text, Confirm (focused, so Enter confirms) and Cancel (or Escape).
import { html } from './lib.js';

/** `ask` is `{text, run}` or null; `done` closes it; Confirm runs `ask.run()`. */
export function Confirm({ ask, done }) {
  if (!ask) return null;
  return html`
    <div class="confirm" role="alertdialog" aria-modal="false" aria-labelledby="confirm-text"
      onKeyDown=${(e) => { if (e.key === 'Escape') done(); }}>
      <p id="confirm-text">${ask.text}</p>
      <button class="danger" ref=${(b) => b && b.focus()} onClick=${() => { done(); ask.run(); }}>Confirm</button>
      <button onClick=${done}>Cancel</button>
    </div>`;
}
