// Browser tests of the dashboard against a running platform, in Debian's Chromium driven by
// playwright-core (never a downloaded browser).
//
//   KEH_DASHBOARD_URL=http://127.0.0.1:8080 node tests/dashboard.mjs
//
// The platform must hold a seeded market. Screenshots of every page at desktop and phone
// widths go to KEH_SCREENSHOTS (default web/test-results). Exits non-zero on any failure.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const base = (process.env.KEH_DASHBOARD_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.KEH_SCREENSHOTS || path.join(here, '..', 'test-results');
const executablePath = process.env.KEH_CHROMIUM || '/usr/bin/chromium';
mkdirSync(shots, { recursive: true });

const username = process.env.KEH_TEST_USERNAME;
const password = process.env.KEH_TEST_PASSWORD;
if (!username || !password) {
  console.log('not ok - KEH_TEST_USERNAME and KEH_TEST_PASSWORD (an agent) are required');
  process.exit(1);
}
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const TIMEOUT = 15_000;
let failures = 0;

function check(condition, what) {
  if (condition) console.log(`ok - ${what}`);
  else {
    failures += 1;
    console.log(`not ok - ${what}`);
  }
}

/**
 * Console errors are failures, except those a step provokes on purpose: `expect(pattern,
 * why)` allows one matching error and names it.
 */
function watchConsole(page, label) {
  const allowed = [];
  const seen = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = `${message.text()} ${message.location()?.url || ''}`;
    const i = allowed.findIndex((a) => a.pattern.test(text));
    if (i >= 0) {
      console.log(`# expected console error (${allowed[i].why}): ${text}`);
      allowed.splice(i, 1);
    } else seen.push(text);
  });
  page.on('pageerror', (error) => seen.push(`uncaught: ${error.message}`));
  return {
    expect(pattern, why) { allowed.push({ pattern, why }); },
    verify() { check(seen.length === 0, `${label}: no unexpected console error${seen.length ? `: ${seen.join(' | ')}` : ''}`); },
  };
}

// Cumulative layout shift of the page's life (shifts right after input excluded), recorded
// from the first paint.
const CLS_PROBE = () => {
  window.__cls = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__cls += entry.value;
  }).observe({ type: 'layout-shift', buffered: true });
};

async function newContext(browser, viewport) {
  const context = await browser.newContext({ viewport, baseURL: base });
  await context.addInitScript(CLS_PROBE);
  context.setDefaultTimeout(TIMEOUT);
  return context;
}

let agentToken = null;
async function api(pathname, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (agentToken) headers.authorization = `Bearer ${agentToken}`;
  const response = await fetch(`${base}${pathname}`, { ...init, headers });
  return { status: response.status, body: await response.json() };
}

/** Signs in through the sign-in page and comes back to `next`. */
async function signInThroughPage(page, next) {
  await page.goto(`/#/sign-in?next=${encodeURIComponent(next)}`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#account', { hasText: username }).waitFor();
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Playwright gives every launch a fresh temporary --user-data-dir.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

try {
  // ---- An agent (context A) and a colleague watching (context B).
  const a = await newContext(browser, DESKTOP);
  const b = await newContext(browser, DESKTOP);
  const pageA = await a.newPage();
  const pageB = await b.newPage();
  const consoleA = watchConsole(pageA, 'agent');
  const feedUrlsA = [];
  pageA.on('request', (request) => {
    if (request.url().includes('/api/v1/listing-events')) feedUrlsA.push(request.url());
  });
  const consoleB = watchConsole(pageB, 'colleague');
  // A wrong password is refused on the sign-in page; the right one signs the agent in.
  await pageA.goto('/#/sign-in');
  await pageA.getByLabel('Username').fill(username);
  await pageA.getByLabel('Password').fill('not the password');
  consoleA.expect(/status of 401/, 'a wrong password is refused with 401 on purpose');
  await pageA.getByRole('button', { name: 'Sign in' }).click();
  await pageA.locator('.form-error', { hasText: 'wrong' }).waitFor();
  check(true, 'a wrong password is refused on the sign-in page');
  const feedsBeforeSignIn = feedUrlsA.length;
  await signInThroughPage(pageA, '#/listings');
  check(true, 'the agent signs in');
  for (let i = 0; i < 200 && feedUrlsA.length === feedsBeforeSignIn; i += 1) await pageA.waitForTimeout(50);
  await pageA.locator('#live-state[data-state="live"]').waitFor();
  const signedInFeeds = feedUrlsA.slice(feedsBeforeSignIn);
  check(signedInFeeds.length > 0 && signedInFeeds.every((u) => u.includes('ticket=') && !u.includes('access_token')),
    `signed in, the live feed is opened with a feed ticket, never the access token (${signedInFeeds.join(' ')})`);
  const signedIn = await api('/api/v1/auth/token', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  agentToken = signedIn.body.access_token;
  await pageA.goto('/#/listings');
  await pageB.goto('/#/listings');
  await pageA.locator('tbody tr[data-key]').first().waitFor();
  await pageB.locator('tbody tr[data-key]').first().waitFor();
  await pageA.evaluate(() => { window.__sameDocument = true; });
  await pageB.evaluate(() => { window.__sameDocument = true; });
  await pageB.locator('#live-state[data-state="live"]').waitFor();

  // An invalid form shows the API's field error next to the field.
  await pageA.getByRole('button', { name: 'New listing' }).click();
  const form = pageA.locator('form[aria-labelledby="create-title"]');
  await form.getByLabel('List price').fill('twelve');
  consoleA.expect(/status of 422/, 'the invalid create form is refused with 422 on purpose');
  await form.getByRole('button', { name: 'Create listing' }).click();
  const priceError = form.locator('[data-error-for="ListPrice"]');
  await priceError.filter({ hasText: /\S/ }).waitFor();
  check(await form.getByLabel('List price').getAttribute('aria-invalid') === 'true', 'invalid price: the field is marked invalid');
  console.log(`# field error shown: ${await priceError.textContent()}`);

  // A valid form creates the listing; it appears in the table without a reload.
  const address = `${Date.now() % 100000} Browser Test Way`;
  const remarks = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> Bright & airy';
  await form.getByLabel('List price').fill('612345');
  await form.getByLabel('Address').fill(address);
  await form.getByLabel('City').fill('Springfield');
  await form.getByLabel('Public remarks').fill(remarks);
  await form.getByRole('button', { name: 'Create listing' }).click();
  const row = pageA.locator('tbody tr', { hasText: address });
  await row.waitFor();
  const key = await row.getAttribute('data-key');
  check(Boolean(key), `created listing ${key} appears in the table`);
  check(await pageA.evaluate(() => window.__sameDocument === true), 'the table updated without a page reload');
  const rowB = pageB.locator(`tbody tr[data-key="${key}"]`);
  await rowB.waitFor();
  check(true, 'the colleague\'s table shows the new listing live');

  // Change its price on the listing page: the timeline and the price chart show it.
  await pageA.locator(`a[href="#/listings/${key}"]`).first().click();
  await pageA.locator('.timeline li').first().waitFor();
  await pageA.getByLabel('New list price').fill('599000');
  await pageA.getByRole('button', { name: 'Change price' }).click();
  await pageA.locator('.timeline li', { hasText: 'ListingPriceChanged' }).waitFor();
  const chartData = await pageA.evaluate(() => window.Chart.getChart(document.getElementById('price-chart')).data.datasets[0].data);
  check(JSON.stringify(chartData) === JSON.stringify([612345, 599000]), `price chart holds both prices: ${JSON.stringify(chartData)}`);
  check((await pageA.locator('.summary').textContent()).includes('$599,000'), 'the summary shows the new price');

  // The colleague sees the change live, in the row that shows the listing.
  await pageB.locator(`tbody tr[data-key="${key}"]`, { hasText: '$599,000' }).waitFor();
  check(await pageB.evaluate(() => window.__sameDocument === true), 'the colleague saw the price change without reloading');

  // The colleague is not signed in: the listing page offers to sign in instead of actions.
  const viewer = await b.newPage();
  await viewer.goto(`/#/listings/${encodeURIComponent(key)}`);
  await viewer.locator('.actions-section', { hasText: 'to change this listing' }).waitFor();
  check(await viewer.getByRole('button', { name: 'Change price' }).count() === 0, 'anonymous visitors get no actions');
  await viewer.close();

  // User text is text: the remarks render literally and nothing in them runs.
  const shown = await pageA.locator('dl.fields dd', { hasText: 'Bright & airy' }).textContent();
  check(shown === remarks, 'remarks with <script> and <img onerror> render as text');
  check(await pageA.evaluate(() => window.__xss === undefined), 'nothing in the remarks ran');
  check(await pageA.locator('main img').count() === 0, 'no element was created from the remarks');

  // A concurrent edit. This page's live feed is cut (the server answers 204, so EventSource
  // stops), so it keeps the version it loaded while someone else changes the price.
  const c = await newContext(browser, DESKTOP);
  await c.route('**/api/v1/listing-events**', (route) => route.fulfill({ status: 204, body: '' }));
  const pageC = await c.newPage();
  const consoleC = watchConsole(pageC, 'agent without live feed');
  await signInThroughPage(pageC, `#/listings/${encodeURIComponent(key)}`);
  await pageC.locator('.summary', { hasText: '$599,000' }).waitFor();
  const other = await api(`/api/v1/listings/${encodeURIComponent(key)}/price`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ListPrice: 598000 }),
  });
  check(other.status === 200, `someone else changed the price (${other.status})`);
  consoleC.expect(/status of 412/, 'a stale If-Match is refused with 412 on purpose');
  await pageC.getByLabel('New list price').fill('590000');
  await pageC.getByRole('button', { name: 'Change price' }).click();
  await pageC.locator('.banner:not([hidden])', { hasText: 'Someone else changed this listing' }).waitFor();
  check(true, 'a concurrent edit shows the conflict and offers a reload');
  await pageC.getByRole('button', { name: 'Reload the listing' }).click();
  await pageC.locator('.summary', { hasText: '$598,000' }).waitFor();
  check(true, 'reloading shows the other edit');
  consoleC.verify();
  await c.close();

  // As of a date: before the listing existed it is not there; now it is.
  await pageA.getByLabel('View as recorded at (UTC)').fill('2001-01-01T00:00');
  consoleA.expect(/status of 404/, 'a listing as of a date before it existed is 404 on purpose');
  await pageA.getByRole('button', { name: 'View', exact: true }).click();
  await pageA.locator('.status.error', { hasText: 'did not exist yet' }).waitFor();
  check(true, 'viewing as of a date before the listing existed says so');
  await pageA.getByRole('button', { name: 'Now' }).click();
  await pageA.locator('.status.ok', { hasText: 'Version' }).waitFor();

  // The market page draws its charts from the seeded market's figures.
  await pageA.goto('/#/market');
  await pageA.locator('.status.ok', { hasText: 'months of the whole market' }).waitFor();
  const series = await api('/api/v1/market/series?period=month');
  const drawn = await pageA.evaluate(() => {
    const chart = window.Chart.getChart(document.getElementById('chart-prices'));
    return { labels: chart.data.labels, list: chart.data.datasets[0].data, sale: chart.data.datasets[1].data };
  });
  check(drawn.labels.length >= 12 && drawn.labels.length === series.body.items.length, `market chart has a point per month (${drawn.labels.length})`);
  check(JSON.stringify(drawn.list) === JSON.stringify(series.body.items.map((i) => (i.MedianListPrice ?? null))),
    'median list price chart equals the API series');
  check(drawn.sale.filter((v) => v !== null).length >= 6, 'median sale price chart has seeded sales');
  for (const id of ['chart-per-sqft', 'chart-inventory', 'chart-dom', 'chart-sale-to-list', 'chart-supply']) {
    const points = await pageA.evaluate((i) => window.Chart.getChart(document.getElementById(i)).data.datasets[0].data.filter((v) => v !== null).length, id);
    check(points >= 6, `${id} is drawn from data (${points} points)`);
  }
  const inventory = await pageA.locator('[data-metric="Inventory"] .tile-value').textContent();
  check(/\d/.test(inventory), `KPI tile shows the inventory (${inventory})`);
  // A city, then a report.
  await pageA.getByLabel('Area kind').selectOption('city');
  await pageA.getByLabel('Area', { exact: true }).selectOption('Springfield');
  await pageA.locator('.status.ok', { hasText: 'of Springfield' }).waitFor();
  check(true, 'the market page follows the area selector');
  await pageA.getByRole('button', { name: 'Request report' }).click();
  await pageA.getByRole('link', { name: 'Download CSV' }).waitFor({ timeout: 30_000 });
  const csvHref = await pageA.getByRole('link', { name: 'Download CSV' }).getAttribute('href');
  const csv = await (await fetch(`${base}${csvHref}`)).text();
  check(csv.startsWith('PeriodStart,PeriodEnd,AsOf'), 'the report downloads as CSV');

  // Live activity: a change made elsewhere appears in the feed.
  await pageB.goto('/#/activity');
  await pageB.locator('#live-state[data-state="live"]').waitFor();
  await api(`/api/v1/listings/${encodeURIComponent(key)}/status`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ StandardStatus: 'Pending' }),
  });
  await pageB.locator('.feed li', { hasText: 'Active → Pending' }).waitFor();
  check(true, 'the activity feed shows a change made elsewhere');

  consoleA.verify();
  consoleB.verify();
  await a.close();
  await b.close();

  // ---- Every page at desktop and phone widths: screenshots, layout stability, no errors.
  const pages = [
    ['listings', '/#/listings', 'tbody tr[data-key]'],
    ['listing', `/#/listings/${encodeURIComponent(key)}`, '.timeline li'],
    ['market', '/#/market', '.status.ok'],
    ['activity', '/#/activity', '#live-state[data-state="live"]'],
    ['sign-in', '/#/sign-in', 'form[aria-labelledby="sign-in-title"]'],
  ];
  for (const [name, url, ready] of pages) {
    for (const [width, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
      const context = await newContext(browser, viewport);
      const page = await context.newPage();
      const watcher = watchConsole(page, `${name} (${width})`);
      await page.goto(url);
      await page.locator(ready).first().waitFor();
      await page.waitForTimeout(300);
      const cls = await page.evaluate(() => window.__cls);
      check(cls < 0.1, `${name} (${width}): cumulative layout shift ${cls.toFixed(4)} < 0.1`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      check(overflow <= 1, `${name} (${width}): no horizontal page scroll (${overflow}px)`);
      const file = path.join(shots, `${name}-${width}.png`);
      await page.screenshot({ path: file, fullPage: true });
      console.log(`# screenshot ${file}`);
      watcher.verify();
      await context.close();
    }
  }

  // ---- The API docs page (Swagger UI from npm, served by the binary) renders offline.
  {
    const context = await newContext(browser, DESKTOP);
    const page = await context.newPage();
    const watcher = watchConsole(page, 'API docs');
    await page.goto('/api/v1/docs');
    await page.locator('.opblock').first().waitFor();
    const operations = await page.locator('.opblock').count();
    check(operations >= 30, `the API docs page lists the operations (${operations})`);
    // An operation opened renders its parameters and schemas (the watcher below fails on
    // any error a schema's rendering throws): a command's, whose body holds every RESO
    // value type.
    await page.locator('.opblock-summary').first().click();
    await page.locator('.opblock-body').first().waitFor();
    await page.screenshot({ path: path.join(shots, 'api-docs-desktop.png') });
    watcher.verify();
    await context.close();
  }

  // ---- Bytes over the wire: files come compressed and, on a reload, revalidate (a 304
  // without a body each), so a reload costs little more than the data it shows.
  {
    const context = await newContext(browser, DESKTOP);
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    let bytes = 0;
    cdp.on('Network.loadingFinished', (event) => { bytes += event.encodedDataLength; });
    await page.goto('/#/listings');
    await page.locator('tbody tr[data-key]').first().waitFor();
    await page.waitForTimeout(1500);
    const first = bytes;
    bytes = 0;
    await page.reload();
    await page.locator('tbody tr[data-key]').first().waitFor();
    await page.waitForTimeout(1500);
    const reload = bytes;
    console.log(`# bytes transferred: first load ${first}, reload ${reload}`);
    check(first < 150_000, `the first load transfers ${first} bytes (< 150 KB: compressed)`);
    check(reload < 20_000, `a reload transfers ${reload} bytes (< 20 KB: files revalidated)`);
    await context.close();
  }

  // ---- Keyboard: the navigation and the form controls are reachable and labelled.
  const context = await newContext(browser, DESKTOP);
  const page = await context.newPage();
  await page.goto('/#/listings');
  await page.locator('tbody tr[data-key]').first().waitFor();
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).length);
  check(unlabelled === 0, 'every form control has a label');
  await page.locator('.skip').focus();
  for (let i = 0; i < 3; i += 1) await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  check(focused === 'Market', `Tab reaches the navigation (${focused})`);
  await page.keyboard.press('Enter');
  await page.locator('.status.ok', { hasText: 'of the whole market' }).waitFor();
  check(true, 'Enter on the focused link opens the market page');
  await context.close();
} catch (error) {
  failures += 1;
  console.log(`not ok - ${error.stack || error}`);
} finally {
  await browser.close();
}

console.log(failures ? `# ${failures} failure(s)` : '# dashboard: all checks passed');
process.exit(failures ? 1 : 0);
