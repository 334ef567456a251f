// The listing page: every field, actions (edit, price, status, media) that handle concurrent
// edits, the event timeline, a price-history chart, and the listing as recorded at a date.

import { api, ApiError, currentUser } from './api.js';
import { h, fill, field, select, formatMoney, formatTime, statusLine, showFieldErrors } from './dom.js';
import { STATUSES, DETAIL_FIELDS, MEDIA_CATEGORIES, inputValue } from './reso.js';
import { onListingEvent } from './live.js';
import { describe } from './activity.js';

const HIDDEN = new Set(['Media', 'OpenHouses']);

export function detailPage(root, key) {
  const path = `/api/v1/listings/${encodeURIComponent(key)}`;
  let listing = null;
  let chart = null;
  let asOf = null;
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const banner = h('div', { class: 'banner', role: 'alert', hidden: true });
  const title = h('h1', {}, key);
  const summary = h('p', { class: 'summary' }, '\u00a0');
  const actions = h('div', { class: 'actions-grid' });
  const fields = h('dl', { class: 'fields' });
  const media = h('div', { class: 'media' });
  const timeline = h('ol', { class: 'timeline' });
  const canvas = h('canvas', { id: 'price-chart', role: 'img', 'aria-label': 'List price over time' });
  const asOfInput = h('input', { type: 'datetime-local', step: 1 });
  const asOfForm = h('form', { class: 'inline-form', 'aria-label': 'View as of a date' },
    field('as_of', 'View as recorded at (UTC)', asOfInput),
    h('button', { type: 'submit' }, 'View'),
    h('button', { type: 'button', onclick: () => { asOf = null; asOfInput.value = ''; load(); } }, 'Now'));
  asOfForm.addEventListener('submit', (e) => {
    e.preventDefault();
    showFieldErrors(asOfForm, {});
    if (!asOfInput.value) {
      showFieldErrors(asOfForm, { as_of: 'Choose a date and time.' });
      return;
    }
    asOf = `${asOfInput.value.length === 16 ? `${asOfInput.value}:00` : asOfInput.value}Z`;
    load();
  });

  function conflict(error) {
    banner.hidden = false;
    fill(banner,
      h('p', {}, `Someone else changed this listing since you loaded it${error.problem.currentVersion ? ` (it is now at version ${error.problem.currentVersion})` : ''}. Your change was not saved.`),
      h('button', {
        type: 'button',
        class: 'primary',
        // At least the version the server reported, even if the read model lags behind it.
        onclick: () => { banner.hidden = true; load(error.problem.currentVersion); },
      }, 'Reload the listing'));
    banner.querySelector('button').focus();
  }

  /** Runs a command; conflicts show the banner, field errors go next to the form's fields. */
  async function command(form, method, url, body) {
    showFieldErrors(form, {});
    const general = form.querySelector('.form-error');
    general.textContent = '';
    try {
      const { body: state } = await api(method, url, { body, ifMatch: listing.Version });
      await api('GET', `${path}?min_version=${state.Version}&wait_ms=5000`).catch(() => {});
      statusLine(status, 'ok', 'Saved.');
      await load();
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.isConflict) conflict(error);
      else if (error instanceof ApiError) {
        const rest = showFieldErrors(form, error.fieldErrors);
        const others = Object.entries(rest).map(([f, m]) => `${f}: ${m}`);
        if (others.length || !Object.keys(error.fieldErrors).length) general.textContent = others.join('; ') || error.message;
      } else general.textContent = String(error.message || error);
      return false;
    }
  }

  function priceForm() {
    const form = h('form', { class: 'card', 'aria-labelledby': 'price-title', novalidate: true },
      h('h2', { id: 'price-title' }, 'Change price'),
      field('ListPrice', 'New list price', h('input', { type: 'text', inputmode: 'decimal' })),
      h('p', { class: 'form-error', role: 'alert' }),
      h('button', { type: 'submit', class: 'primary' }, 'Change price'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const value = inputValue(form.elements.namedItem('ListPrice'), 'number');
      if (value === undefined) {
        showFieldErrors(form, { ListPrice: 'Enter the new list price.' });
        return;
      }
      command(form, 'POST', `${path}/price`, { ListPrice: value });
    });
    return form;
  }

  function statusForm() {
    const closing = h('div', { class: 'closing', hidden: true },
      field('ClosePrice', 'Close price', h('input', { type: 'text', inputmode: 'decimal' })),
      field('CloseDate', 'Close date', h('input', { type: 'date' })));
    const target = select(STATUSES.filter((s) => s !== listing.StandardStatus));
    target.addEventListener('change', () => { closing.hidden = target.value !== 'Closed'; });
    const form = h('form', { class: 'card', 'aria-labelledby': 'status-title', novalidate: true },
      h('h2', { id: 'status-title' }, 'Change status'),
      field('StandardStatus', 'New status', target),
      closing,
      h('p', { class: 'form-error', role: 'alert' }),
      h('button', { type: 'submit', class: 'primary' }, 'Change status'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = { StandardStatus: target.value };
      if (target.value === 'Closed') {
        const price = inputValue(form.elements.namedItem('ClosePrice'), 'number');
        const date = inputValue(form.elements.namedItem('CloseDate'), 'text');
        if (price !== undefined) body.ClosePrice = price;
        if (date !== undefined) body.CloseDate = date;
      }
      command(form, 'POST', `${path}/status`, body);
    });
    return form;
  }

  function editForm() {
    const form = h('form', { class: 'card wide grid-form', 'aria-labelledby': 'edit-title', novalidate: true },
      h('h2', { id: 'edit-title' }, 'Edit details'),
      ...DETAIL_FIELDS.map(([name, label, kind]) => {
        const input = kind === 'textarea' ? h('textarea', { rows: 3 }) : h('input', { type: 'text' });
        input.value = listing[name] ?? '';
        return field(name, label, input);
      }),
      h('p', { class: 'form-error', role: 'alert' }),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save details')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const patch = {};
      for (const [name, , kind] of DETAIL_FIELDS) {
        const value = inputValue(form.elements.namedItem(name), kind);
        const before = listing[name];
        if (value === undefined && before !== undefined && before !== null) patch[name] = null;
        else if (value !== undefined && String(value) !== String(before ?? '')) patch[name] = value;
      }
      if (!Object.keys(patch).length) {
        form.querySelector('.form-error').textContent = 'Nothing changed.';
        return;
      }
      command(form, 'PATCH', path, patch);
    });
    return form;
  }

  function mediaSection() {
    const items = listing.Media || [];
    const form = h('form', { class: 'inline-form', 'aria-label': 'Add media', novalidate: true },
      field('MediaURL', 'Media URL', h('input', { type: 'url', placeholder: 'https://…' })),
      field('MediaCategory', 'Category', select(MEDIA_CATEGORIES)),
      h('p', { class: 'form-error', role: 'alert' }),
      h('button', { type: 'submit' }, 'Add media'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      command(form, 'POST', `${path}/media`, {
        MediaURL: form.elements.namedItem('MediaURL').value.trim(),
        MediaCategory: form.elements.namedItem('MediaCategory').value,
      });
    });
    return [
      h('h2', {}, `Media (${items.length})`),
      items.length
        ? h('ol', { class: 'media-list' }, items.map((m) => h('li', {},
          h('span', { class: 'badge' }, m.MediaCategory),
          h('a', { href: m.MediaURL, rel: 'noopener noreferrer', target: '_blank' }, m.ShortDescription || m.MediaURL))))
        : h('p', { class: 'status' }, 'No media yet.'),
      asOf || !currentUser() ? null : form,
    ];
  }

  function drawChart(history) {
    const points = [];
    for (const e of history) {
      const price = e.EventType === 'ListingCreated' || e.EventType === 'ListingPriceChanged' ? e.Data.ListPrice : null;
      if (price !== null && price !== undefined) points.push([String(e.EffectiveAt).slice(0, 10), Number(price)]);
    }
    const data = {
      labels: points.map((p) => p[0]),
      datasets: [{ label: 'List price', data: points.map((p) => p[1]), stepped: true, borderColor: '#2563eb', backgroundColor: '#2563eb', pointRadius: 4 }],
    };
    if (chart) {
      chart.data = data;
      chart.update();
    } else {
      chart = new window.Chart(canvas, {
        type: 'line',
        data,
        options: {
          maintainAspectRatio: false,
          animation: false,
          plugins: { legend: { display: false } },
          scales: { y: { ticks: { callback: (v) => formatMoney(v) } } },
        },
      });
    }
  }

  async function load(minVersion) {
    statusLine(status, 'loading', asOf ? `Loading the listing as recorded at ${asOf}…` : 'Loading…');
    // Only a version number (load is also a promise callback, handed other values).
    const current = Number.isInteger(minVersion) && minVersion > 0
      ? `${path}?min_version=${minVersion}&wait_ms=5000` : path;
    try {
      const [state, history] = await Promise.all([
        api('GET', asOf ? `${path}?as_of=${encodeURIComponent(asOf)}` : current),
        api('GET', `${path}/history`),
      ]);
      listing = state.body;
      const events = history.body.items.filter((e) => !asOf || e.RecordedAt <= asOf);
      title.textContent = listing.UnparsedAddress || listing.ListingKey;
      fill(summary,
        h('span', { class: `badge s-${String(listing.StandardStatus).replace(/\s+/g, '-').toLowerCase()}` }, listing.StandardStatus),
        ` ${formatMoney(listing.ListPrice)} · ${listing.PropertyType} · ${listing.City || ''} · version ${listing.Version}`,
        asOf ? h('strong', { class: 'as-of' }, ` · as recorded at ${formatTime(asOf)}`) : null);
      fill(fields, Object.entries(listing)
        .filter(([k, v]) => !HIDDEN.has(k) && v !== null && typeof v !== 'object')
        .map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
      if (asOf) fill(actions, h('p', { class: 'status' }, 'Viewing a past state: actions are off. Choose "Now" to act.'));
      else if (!currentUser()) {
        fill(actions, h('p', { class: 'status' }, h('a', { href: `#/sign-in?next=${encodeURIComponent(location.hash)}` }, 'Sign in'), ' to change this listing.'));
      } else fill(actions, priceForm(), statusForm(), editForm());
      fill(media, mediaSection());
      fill(timeline, events.slice().reverse().map((e) => h('li', {},
        h('time', { datetime: e.EffectiveAt }, formatTime(e.EffectiveAt)),
        h('span', { class: 'event-type' }, e.EventType),
        h('span', { class: 'event-text' }, describe({ EventType: e.EventType, Data: e.Data })),
        h('span', { class: 'actor' }, `by ${e.Actor}, recorded ${formatTime(e.RecordedAt)}`))));
      drawChart(events);
      statusLine(status, 'ok', asOf ? `As recorded at ${formatTime(asOf)}.` : `Version ${listing.Version}.`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        statusLine(status, 'error', asOf ? 'The listing did not exist yet at that time.' : 'No such listing.');
      } else if (error instanceof ApiError && error.status === 400) {
        showFieldErrors(asOfForm, error.fieldErrors);
        statusLine(status, 'error', error.message);
      } else {
        statusLine(status, 'error', `The listing could not be loaded: ${error.message}`);
      }
    }
  }

  const unsubscribe = onListingEvent((event) => {
    if (event.EventType === 'Resync' && !asOf) {
      load();
      return;
    }
    if (event.ListingKey === key && !asOf && listing && Number(event.Sequence) > Number(listing.Version)) {
      api('GET', `${path}?min_version=${event.Sequence}&wait_ms=5000`).then(() => load(), () => load());
    }
  });

  // The page appears whole once the listing has loaded, so nothing moves while it loads.
  const content = h('div', { hidden: true },
    h('div', { class: 'page-head' }, title),
    summary,
    banner,
    asOfForm,
    h('div', { class: 'two-col' },
      h('section', { 'aria-labelledby': 'fields-title' }, h('h2', { id: 'fields-title' }, 'Fields'), fields),
      h('section', { 'aria-labelledby': 'history-title' },
        h('h2', { id: 'history-title' }, 'Price history'),
        h('div', { class: 'chart-box' }, canvas),
        h('h2', {}, 'Timeline'),
        timeline)),
    h('section', { class: 'actions-section', 'aria-label': 'Actions' }, actions),
    h('section', { 'aria-label': 'Media' }, media));
  fill(root, h('p', {}, h('a', { href: '#/listings' }, '← All listings')), status, content);
  load().then(() => { content.hidden = false; });
  return () => { unsubscribe(); chart?.destroy(); };
}
