// Resonite names and descriptions carry rich-text tags (<color=#f00>, <b>, <size=120%>...).
// They are shown readable: the tags Resonite knows are removed, bold, italic, underline,
// strike-through and colour are kept as styling, and anything else (`<img src=x ...>`,
// `<script>`) is not a Resonite tag and stays as the characters it is. The result is a list
// of text segments; the caller renders each as a text node, never as HTML.
import { html } from './lib.js';

const KNOWN = new Set([
  'align', 'allcaps', 'alpha', 'b', 'br', 'closeall', 'color', 'cspace', 'font', 'gradient',
  'i', 'indent', 'line-height', 'line-indent', 'link', 'lowercase', 'margin', 'mark',
  'mspace', 'nobr', 'noparse', 'page', 'pos', 'rotate', 's', 'size', 'smallcaps', 'space',
  'sprite', 'strikethrough', 'sub', 'sup', 'u', 'uppercase', 'voffset', 'width',
]);
const TAG = /<(\/?)([a-z][a-z-]*)(?:=("[^"<>]*"|[^<>\s]*))?\s*>/gi;
const COLOUR = /^(#[0-9a-f]{3,8}|[a-z]{3,20})$/i;

/** Segments `{text, b, i, u, s, color}` of `source` with its rich-text tags applied. */
export function parse(source) {
  const text = String(source ?? '');
  const out = [];
  const style = { b: 0, i: 0, u: 0, s: 0, colors: [] };
  let last = 0;
  const push = (piece) => {
    if (piece) {
      out.push({
        text: piece, b: style.b > 0, i: style.i > 0, u: style.u > 0, s: style.s > 0,
        color: style.colors.at(-1) ?? null,
      });
    }
  };
  for (const match of text.matchAll(TAG)) {
    const [whole, closing, rawName, rawValue] = match;
    const name = rawName.toLowerCase();
    if (!KNOWN.has(name)) continue; // not a tag Resonite knows: the characters stay
    push(text.slice(last, match.index));
    last = match.index + whole.length;
    const delta = closing ? -1 : 1;
    if (name === 'b' || name === 'i' || name === 'u' || name === 's') {
      style[name] = Math.max(0, style[name] + delta);
    } else if (name === 'strikethrough') {
      style.s = Math.max(0, style.s + delta);
    } else if (name === 'color') {
      if (closing) style.colors.pop();
      else {
        const value = (rawValue ?? '').replaceAll('"', '');
        style.colors.push(COLOUR.test(value) ? value : null);
      }
    } else if (name === 'br') {
      push(' ');
    } else if (name === 'closeall') {
      Object.assign(style, { b: 0, i: 0, u: 0, s: 0, colors: [] });
    }
  }
  push(text.slice(last));
  return out;
}

/** `source` without its rich-text tags: for sorting, filtering and accessible names. */
export function plain(source) {
  return parse(source).map((s) => s.text).join('');
}

/** `source` rendered: styled text nodes, the colour set through the CSSOM (which a
 * Content-Security-Policy without 'unsafe-inline' allows), never markup. */
export function Rich({ text }) {
  return parse(text).map((segment) => {
    const classes = ['b', 'i', 'u', 's'].filter((k) => segment[k]).map((k) => `rt-${k}`);
    const ref = segment.color
      ? (element) => { if (element) element.style.setProperty('color', segment.color); }
      : undefined;
    return classes.length || ref
      ? html`<span class=${classes.join(' ')} ref=${ref}>${segment.text}</span>`
      : segment.text;
  });
}
