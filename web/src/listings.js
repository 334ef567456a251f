// The listings page: search and filters, a sortable table with cursor pagination, the create
// form, and live updates of the rows shown.

import { api, query, ApiError, currentUser } from './api.js';
import { h, fill, field, select, formatMoney, formatNumber, formatTime, statusLine, showFieldErrors } from './dom.js';
import { STATUSES, PROPERTY_TYPES, DETAIL_FIELDS, inputValue } from './reso.js';
import { onListingEvent } from './live.js';

const SORTABLE = { ListPrice: 'ListPrice', ModificationTimestamp: 'ModificationTimestamp', ListingKey: 'ListingKey' };
const PAGE = 25;

const COLUMNS = [
  ['ListingKey', 'Listing'],
  ['UnparsedAddress', 'Address'],
  ['City', 'City'],
  ['StandardStatus', 'Status'],
  ['PropertyType', 'Type'],
  ['ListPrice', 'Price'],
  ['BedroomsTotal', 'Beds'],
  ['LivingArea', 'Sq ft'],
  ['ModificationTimestamp', 'Modified'],
];

export function listingsPage(root) {
  const view = { sort: '-ModificationTimestamp', cursors: [null], page: 0, filters: {}, keys: new Set() };
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const tbody = h('tbody');
  const thead = h('thead');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const filters = filterForm(view, () => load(true));
  const createSection = h('section', { class: 'panel', hidden: true, 'aria-labelledby': 'create-title' });
  const newButton = h('button', { type: 'button', class: 'primary', 'aria-expanded': 'false', onclick: toggleCreate }, 'New listing');

  function toggleCreate() {
    if (!currentUser()) {
      location.hash = `#/sign-in?next=${encodeURIComponent('#/listings')}`;
      return;
    }
    const open = createSection.hidden;
    createSection.hidden = !open;
    newButton.setAttribute('aria-expanded', String(open));
    if (open) {
      fill(createSection, createForm(async (key) => {
        createSection.hidden = true;
        newButton.setAttribute('aria-expanded', 'false');
        statusLine(status, 'ok', `Listing ${key} created.`);
        await load(true, `Listing ${key} created.`);
      }, () => toggleCreate()));
      createSection.querySelector('select, input')?.focus();
    }
  }

  function header() {
    const row = h('tr');
    for (const [name, label] of COLUMNS) {
      const sortName = SORTABLE[name];
      if (!sortName) {
        row.append(h('th', { scope: 'col' }, label));
        continue;
      }
      const current = view.sort.replace(/^-/, '') === sortName ? (view.sort.startsWith('-') ? 'descending' : 'ascending') : 'none';
      const button = h('button', {
        type: 'button', class: 'sort',
        onclick: () => {
          view.sort = current === 'descending' ? sortName : current === 'ascending' ? `-${sortName}` : `-${sortName}`;
          if (current === 'none' && sortName === 'ListingKey') view.sort = sortName;
          load(true);
        },
      }, label, h('span', { 'aria-hidden': 'true', class: 'arrow' }, current === 'ascending' ? ' ▲' : current === 'descending' ? ' ▼' : ''));
      row.append(h('th', { scope: 'col', 'aria-sort': current }, button));
    }
    fill(thead, row);
  }

  function rowOf(item) {
    return h('tr', { dataset: { key: item.ListingKey } },
      h('td', {}, h('a', { href: `#/listings/${encodeURIComponent(item.ListingKey)}`, title: item.ListingKey }, item.ListingKey)),
      h('td', {}, item.UnparsedAddress || '—'),
      h('td', {}, item.City || '—'),
      h('td', {}, h('span', { class: `badge s-${(item.StandardStatus || '').replace(/\s+/g, '-').toLowerCase()}` }, item.StandardStatus)),
      h('td', {}, item.PropertyType),
      h('td', { class: 'num' }, formatMoney(item.ListPrice)),
      h('td', { class: 'num' }, formatNumber(item.BedroomsTotal)),
      h('td', { class: 'num' }, formatNumber(item.LivingArea)),
      h('td', {}, formatTime(item.ModificationTimestamp)));
  }

  async function load(reset = false, message) {
    if (reset) {
      view.cursors = [null];
      view.page = 0;
    }
    header();
    statusLine(status, 'loading', 'Loading listings…');
    tbody.setAttribute('aria-busy', 'true');
    try {
      const { body } = await api('GET', `/api/v1/listings${query({
        ...view.filters, sort: view.sort, limit: PAGE, cursor: view.cursors[view.page], count: 'true',
      })}`);
      view.keys = new Set(body.items.map((i) => i.ListingKey));
      fill(tbody, body.items.length ? body.items.map(rowOf)
        : h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'empty' }, 'No listing matches these filters.')));
      view.cursors[view.page + 1] = body.nextCursor;
      const total = body.totalCount ?? body.items.length;
      fill(pager,
        h('button', { type: 'button', disabled: view.page === 0, onclick: () => { view.page -= 1; load(); } }, '← Previous'),
        h('span', {}, `Page ${view.page + 1} · ${formatNumber(total)} listings`),
        h('button', { type: 'button', disabled: !body.nextCursor, onclick: () => { view.page += 1; load(); } }, 'Next →'));
      statusLine(status, 'ok', message || `${formatNumber(total)} listings.`);
    } catch (error) {
      fill(tbody, h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'empty' }, 'Listings could not be loaded.')));
      if (error instanceof ApiError && error.status === 400) {
        showFieldErrors(filters, error.fieldErrors);
      }
      statusLine(status, 'error', `Listings could not be loaded: ${error.message}`);
    } finally {
      tbody.removeAttribute('aria-busy');
    }
  }

  // Rows update themselves when their listing changes; a new listing refreshes page one.
  let refresh = null;
  const unsubscribe = onListingEvent(async (event) => {
    if (event.EventType === 'Resync') {
      load(true);
      return;
    }
    const key = event.ListingKey;
    if (view.keys.has(key)) {
      try {
        const { body } = await api('GET', `/api/v1/listings/${encodeURIComponent(key)}?min_version=${event.Sequence}&wait_ms=5000`);
        const old = tbody.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
        if (old) {
          const row = rowOf(body);
          row.classList.add('flash');
          old.replaceWith(row);
        }
      } catch { /* the next event or a reload shows it */ }
    } else if (event.EventType === 'ListingCreated' && view.page === 0) {
      clearTimeout(refresh);
      refresh = setTimeout(async () => {
        try {
          await api('GET', `/api/v1/listings/${encodeURIComponent(key)}?min_version=1&wait_ms=5000`);
        } catch { /* shown on the next load */ }
        load(true);
      }, 300);
    }
  });

  fill(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Listings'), newButton),
    createSection,
    filters,
    status,
    h('div', { class: 'table-wrap' }, h('table', { class: 'listings' }, h('caption', { class: 'visually-hidden' }, 'Listings'), thead, tbody)),
    pager);
  // Placeholder rows keep the layout still while the first page loads.
  fill(tbody, Array.from({ length: 8 }, () => h('tr', { class: 'placeholder' }, COLUMNS.map(() => h('td', {}, '\u00a0')))));
  load(true);
  return () => { unsubscribe(); clearTimeout(refresh); };
}

function filterForm(view, apply) {
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter listings' });
  const inputs = [
    field('q', 'Search', h('input', { type: 'search', placeholder: 'address, remarks…' })),
    field('city', 'City', h('input', { type: 'text' })),
    field('status', 'Status', select([['', 'Any'], ...STATUSES])),
    field('property_type', 'Type', select([['', 'Any'], ...PROPERTY_TYPES])),
    field('min_price', 'Min price', h('input', { type: 'text', inputmode: 'numeric' })),
    field('max_price', 'Max price', h('input', { type: 'text', inputmode: 'numeric' })),
    field('min_beds', 'Min beds', h('input', { type: 'text', inputmode: 'numeric' })),
  ];
  form.append(...inputs,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Search'),
      h('button', { type: 'reset' }, 'Reset')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    showFieldErrors(form, {});
    view.filters = {};
    for (const name of ['q', 'city', 'status', 'property_type', 'min_price', 'max_price', 'min_beds']) {
      const value = form.elements.namedItem(name).value.trim();
      if (value) view.filters[name] = value;
    }
    apply();
  });
  form.addEventListener('reset', () => {
    view.filters = {};
    showFieldErrors(form, {});
    setTimeout(apply, 0);
  });
  return form;
}

/** The create form; `created(key)` after a 201, `cancel()` on Cancel. */
export function createForm(created, cancel) {
  const form = h('form', { class: 'grid-form', novalidate: true, 'aria-labelledby': 'create-title' });
  const general = h('p', { class: 'status error', role: 'alert', hidden: true });
  form.append(
    h('h2', { id: 'create-title' }, 'New listing'),
    general,
    field('PropertyType', 'Property type', select(PROPERTY_TYPES, 'Residential')),
    field('StandardStatus', 'Status', select(['Active', 'Coming Soon', 'Incomplete'], 'Active')),
    field('ListPrice', 'List price', h('input', { type: 'text', inputmode: 'decimal', required: true })),
    field('ListingContractDate', 'Listing contract date', h('input', { type: 'date' })),
    ...DETAIL_FIELDS.map(([name, label, kind]) => field(name, label,
      kind === 'textarea' ? h('textarea', { rows: 3 }) : h('input', { type: 'text', inputmode: kind === 'text' ? undefined : 'decimal' }))),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Create listing'),
      h('button', { type: 'button', onclick: cancel }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    general.hidden = true;
    const body = {};
    for (const [name, kind] of [['PropertyType', 'text'], ['StandardStatus', 'text'], ['ListPrice', 'number'], ['ListingContractDate', 'text'],
      ...DETAIL_FIELDS.map(([n, , k]) => [n, k])]) {
      const value = inputValue(form.elements.namedItem(name), kind);
      if (value !== undefined) body[name] = value;
    }
    if (body.ListPrice === undefined) {
      showFieldErrors(form, { ListPrice: 'A list price is required.' });
      return;
    }
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const { body: listing } = await api('POST', '/api/v1/listings', { body });
      // Read-your-writes: wait (bounded) until the table's source has the new listing.
      await api('GET', `/api/v1/listings/${encodeURIComponent(listing.ListingKey)}?min_version=1&wait_ms=5000`).catch(() => {});
      created(listing.ListingKey);
    } catch (error) {
      if (error instanceof ApiError) {
        const rest = showFieldErrors(form, error.fieldErrors);
        const others = Object.entries(rest).map(([f, m]) => `${f}: ${m}`);
        if (others.length || !Object.keys(error.fieldErrors).length) {
          general.hidden = false;
          general.textContent = others.length ? others.join('; ') : error.message;
        }
      } else {
        general.hidden = false;
        general.textContent = String(error.message || error);
      }
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
