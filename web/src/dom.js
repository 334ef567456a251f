// DOM helpers. User text is only ever set as text (`textContent`), never parsed as HTML.

/** Creates an element: `h('a', { href: '#/' , class: 'x', onclick: f }, 'text', child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const money = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: 0 });
const exactMoney = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });

export function formatMoney(value, exact = false) {
  if (value === undefined || value === null || value === '') return '—';
  return (exact ? exactMoney : money).format(Number(value));
}

export function formatNumber(value, digits = 0) {
  if (value === undefined || value === null || value === '') return '—';
  return Number(value).toLocaleString('en-US', { maximumFractionDigits: digits });
}

export function formatPercent(value) {
  if (value === undefined || value === null) return '—';
  return `${(Number(value) * 100).toFixed(1)}%`;
}

export function formatTime(value) {
  if (!value) return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

/** A status line (`role=status`) that says what is loading or what went wrong. */
export function statusLine(el, kind, text) {
  el.className = `status ${kind}`;
  el.textContent = text;
}

/** Shows field errors next to the form's inputs (by `name`); returns the ones not shown. */
export function showFieldErrors(form, errors) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const unshown = {};
  for (const [field, message] of Object.entries(errors || {})) {
    const input = form.elements.namedItem(field);
    const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
    if (input && slot) {
      input.setAttribute('aria-invalid', 'true');
      slot.textContent = message;
    } else {
      unshown[field] = message;
    }
  }
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
  return unshown;
}

/** A labelled form field with a slot for its error: `field('ListPrice', 'List price', input)`. */
export function field(name, label, input, hint) {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  input.id = id;
  input.name = name;
  const errorId = `${id}-error`;
  input.setAttribute('aria-describedby', errorId);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('small', { class: 'hint' }, hint) : null,
    h('span', { class: 'field-error', id: errorId, 'data-error-for': name, role: 'alert' }));
}

export function select(options, value) {
  const el = h('select');
  for (const option of options) {
    const [v, text] = Array.isArray(option) ? option : [option, option];
    el.append(h('option', { value: v, selected: v === value }, text));
  }
  return el;
}
