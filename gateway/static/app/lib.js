// The dashboard's one door to its vendored libraries (gateway/static/vendor, refreshed by
// deploy/dev/vendor-browser.py): Preact renders, htm turns tagged templates into its
// elements. Everything interpolated into a template is a text node or an attribute value,
// never parsed as HTML, so what a headless says is shown as the characters it said.
import { h, render, Fragment } from '/vendor/preact@10.29.8/preact.module.js';
import {
  useState, useEffect, useRef, useMemo, useCallback, useReducer,
} from '/vendor/preact@10.29.8/hooks.module.js';
import htm from '/vendor/htm@3.1.1/htm.module.js';

export const html = htm.bind(h);
export { render, Fragment, useState, useEffect, useRef, useMemo, useCallback, useReducer };

/** The roles, each including the ones before (README, *Security*). */
export const ROLES = ['viewer', 'moderator', 'operator', 'admin'];

/** Whether `role` holds `needed` or a higher role. */
export function may(role, needed) {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/** A console argument: wrapped in double quotes when it holds a space (CONSOLE.md). */
export function arg(text) {
  const value = String(text);
  return value === '' || /[\s"]/.test(value) ? `"${value.replaceAll('"', '')}"` : value;
}

/** A store of plain state with subscribers; `useStore` re-renders on every change. */
export class Store {
  constructor(state) {
    this.state = state;
    this.listeners = new Set();
    this.pending = false;
  }

  update(change) {
    change(this.state);
    if (!this.pending) { // one render per task, however many events arrived
      this.pending = true;
      queueMicrotask(() => {
        this.pending = false;
        for (const listener of this.listeners) listener();
      });
    }
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export function useStore(store) {
  const [, bump] = useReducer((n) => n + 1, 0);
  useEffect(() => {
    const unsubscribe = store.subscribe(bump);
    bump(); // a change made between the render and this effect would be missed otherwise
    return unsubscribe;
  }, [store]);
  return store.state;
}
