// The market page: area, property type and period selectors, KPI tiles, Chart.js charts of
// the market metrics, and market reports (requested, polled, downloaded).

import { api, query, ApiError } from './api.js';
import { h, fill, field, select, formatMoney, formatNumber, formatPercent, statusLine, showFieldErrors } from './dom.js';

const KINDS = [['market', 'Whole market'], ['city', 'City'], ['postal-code', 'Postal code'], ['subdivision', 'Subdivision']];

/** The charts: id, title, and the datasets they draw ([label, field, colour, kind]). */
const CHARTS = [
  ['chart-prices', 'Median list and sale price', [['Median list price', 'MedianListPrice', '#2563eb'], ['Median sale price', 'MedianSalePrice', '#16a34a']], 'money'],
  ['chart-per-sqft', 'Price per square foot', [['List $/sq ft', 'MedianListPricePerSqFt', '#2563eb'], ['Sale $/sq ft', 'MedianSalePricePerSqFt', '#16a34a']], 'money'],
  ['chart-inventory', 'Inventory and new listings', [['Inventory', 'Inventory', '#7c3aed', 'bar'], ['New listings', 'NewListings', '#f59e0b', 'bar']], 'count'],
  ['chart-dom', 'Median days on market', [['Days on market', 'MedianDaysOnMarket', '#dc2626']], 'count'],
  ['chart-sale-to-list', 'Sale-to-list ratio', [['Sale to list', 'SaleToListRatio', '#0891b2'], ['Sale to original list', 'SaleToOriginalListRatio', '#64748b']], 'ratio'],
  ['chart-supply', 'Months of supply', [['Months of supply', 'MonthsOfSupply', '#be185d']], 'count'],
];

const TILES = [
  ['Inventory', 'Active inventory', formatNumber],
  ['NewListings', 'New listings', formatNumber],
  ['MedianListPrice', 'Median list price', (v) => formatMoney(v)],
  ['MedianSalePrice', 'Median sale price', (v) => formatMoney(v)],
  ['MedianDaysOnMarket', 'Median days on market', (v) => formatNumber(v, 1)],
  ['SaleToListRatio', 'Sale-to-list', formatPercent],
  ['MonthsOfSupply', 'Months of supply', (v) => formatNumber(v, 1)],
  ['HomeSales', 'Home sales', formatNumber],
];

export function marketPage(root) {
  const charts = new Map();
  let areas = [];
  let poll = null;
  const status = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const kind = select(KINDS, 'market');
  const area = select([['All', 'All']], 'All');
  const type = select([['All', 'All types']], 'All');
  const period = select([['month', 'Month'], ['week', 'Week']], 'month');
  const controls = h('form', { class: 'filters', 'aria-label': 'Market selection' },
    field('area_kind', 'Area kind', kind),
    field('area', 'Area', area),
    field('property_type', 'Property type', type),
    field('period', 'Period', period));
  const tiles = h('div', { class: 'tiles' }, TILES.map(([name, label]) => h('div', { class: 'tile', dataset: { metric: name } },
    h('span', { class: 'tile-label' }, label), h('span', { class: 'tile-value' }, '—'), h('span', { class: 'tile-delta' }, '\u00a0'))));
  const grid = h('div', { class: 'charts' }, CHARTS.map(([id, title]) => h('figure', { class: 'chart-card' },
    h('figcaption', {}, title),
    h('div', { class: 'chart-box' }, h('canvas', { id, role: 'img', 'aria-label': title })))));
  const report = reportForm(() => ({ AreaKind: kind.value, Area: area.value, PropertyType: type.value, Period: period.value }), (p) => { poll = p; });

  function areaOptions() {
    const names = [...new Set(areas.filter((a) => a.AreaKind === kind.value).map((a) => a.Area))].sort();
    fill(area, names.map((n) => h('option', { value: n }, n)));
    typeOptions();
  }

  function typeOptions() {
    const types = areas.filter((a) => a.AreaKind === kind.value && a.Area === area.value).map((a) => a.PropertyType);
    const previous = type.value;
    fill(type, ['All', ...types.filter((t) => t !== 'All').sort()].map((t) => h('option', { value: t }, t === 'All' ? 'All types' : t)));
    if (types.includes(previous)) type.value = previous;
  }

  function selection() {
    return { area_kind: kind.value, area: kind.value === 'market' ? undefined : area.value, property_type: type.value };
  }

  async function loadSummary() {
    const { body } = await api('GET', `/api/v1/market/summary${query(selection())}`);
    const current = body.CurrentMonth || {};
    const previous = body.PreviousMonth || {};
    for (const [name, , format] of TILES) {
      const tile = tiles.querySelector(`[data-metric="${name}"]`);
      tile.querySelector('.tile-value').textContent = format(current[name]);
      const delta = current[name] !== undefined && current[name] !== null && previous[name] !== undefined && previous[name] !== null
        ? `last month ${format(previous[name])}` : '\u00a0';
      tile.querySelector('.tile-delta').textContent = delta;
    }
  }

  async function loadSeries() {
    const { body } = await api('GET', `/api/v1/market/series${query({ ...selection(), period: period.value })}`);
    const items = body.items;
    const labels = items.map((i) => i.PeriodStart);
    for (const [id, , datasets, unit] of CHARTS) {
      const data = {
        labels,
        datasets: datasets.map(([label, name, colour, chartType]) => ({
          label, type: chartType || 'line', borderColor: colour, backgroundColor: colour, pointRadius: 0, borderWidth: 2, spanGaps: true,
          data: items.map((i) => (i[name] === null || i[name] === undefined ? null : Number(i[name]))),
        })),
      };
      const existing = charts.get(id);
      if (existing) {
        existing.data = data;
        existing.update();
        continue;
      }
      const tick = unit === 'money' ? (v) => formatMoney(v) : unit === 'ratio' ? (v) => formatPercent(v) : (v) => formatNumber(v);
      charts.set(id, new window.Chart(document.getElementById(id), {
        type: 'line',
        data,
        options: {
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: 'index', intersect: false },
          scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { ticks: { callback: tick } } },
          plugins: { legend: { position: 'bottom' } },
        },
      }));
    }
    return items.length;
  }

  async function refresh() {
    statusLine(status, 'loading', 'Loading market figures…');
    try {
      await loadSummary();
      const count = await loadSeries();
      statusLine(status, 'ok', `${count} ${period.value === 'month' ? 'months' : 'weeks'} of ${kind.value === 'market' ? 'the whole market' : area.value}, ${type.value === 'All' ? 'every property type' : type.value}.`);
    } catch (error) {
      const message = error instanceof ApiError && error.status === 404
        ? 'No market data for this selection yet.' : `Market figures could not be loaded: ${error.message}`;
      statusLine(status, 'error', message);
    }
  }

  kind.addEventListener('change', () => { areaOptions(); refresh(); });
  area.addEventListener('change', () => { typeOptions(); refresh(); });
  type.addEventListener('change', refresh);
  period.addEventListener('change', refresh);

  fill(root,
    h('div', { class: 'page-head' }, h('h1', {}, 'Market')),
    controls, status, tiles, grid,
    h('section', { class: 'panel', 'aria-labelledby': 'report-title' }, report));

  (async () => {
    try {
      const { body } = await api('GET', '/api/v1/market/areas');
      areas = body.items;
    } catch (error) {
      statusLine(status, 'error', `Areas could not be loaded: ${error.message}`);
    }
    areaOptions();
    refresh();
  })();
  return () => {
    clearTimeout(poll);
    for (const chart of charts.values()) chart.destroy();
  };
}

function reportForm(selection, setPoll) {
  const today = new Date().toISOString().slice(0, 10);
  const yearAgo = new Date(Date.now() - 365 * 864e5).toISOString().slice(0, 10);
  const from = h('input', { type: 'date', value: yearAgo });
  const to = h('input', { type: 'date', value: today });
  const state = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' });
  const links = h('p', { class: 'downloads' });
  const form = h('form', { class: 'inline-form', novalidate: true },
    h('h2', { id: 'report-title' }, 'Market report'),
    field('From', 'From', from),
    field('To', 'To', to),
    h('button', { type: 'submit', class: 'primary' }, 'Request report'),
    state, links);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showFieldErrors(form, {});
    links.replaceChildren();
    const sel = selection();
    const body = { ...sel, From: from.value, To: to.value };
    if (sel.AreaKind === 'market') body.Area = 'All';
    try {
      const { body: job, headers } = await api('POST', '/api/v1/market/reports', { body });
      const location = headers.get('location') || `/api/v1/market/reports/${job.ReportId}`;
      statusLine(state, 'loading', `Report ${job.Status}…`);
      const check = async () => {
        try {
          const { body: current } = await api('GET', location);
          if (current.Status === 'done') {
            statusLine(state, 'ok', `Report ready: ${current.Rows} periods.`);
            fill(links,
              h('a', { href: current.Downloads.csv, download: '' }, 'Download CSV'), ' · ',
              h('a', { href: current.Downloads.json, download: '' }, 'Download JSON'));
          } else if (current.Status === 'failed') {
            statusLine(state, 'error', `The report failed: ${current.Error || 'unknown error'}`);
          } else {
            statusLine(state, 'loading', `Report ${current.Status}…`);
            setPoll(setTimeout(check, 1000));
          }
        } catch (error) {
          statusLine(state, 'error', `The report status could not be read: ${error.message}`);
        }
      };
      setPoll(setTimeout(check, 500));
    } catch (error) {
      if (error instanceof ApiError) {
        const rest = showFieldErrors(form, error.fieldErrors);
        statusLine(state, 'error', Object.values(rest).join('; ') || error.message);
      } else statusLine(state, 'error', error.message);
    }
  });
  return form;
}
