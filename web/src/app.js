// The dashboard shell: navigation, hash routing (#/listings, #/listings/{key}, #/market,
// #/activity) and the live-connection indicator.

import { h, fill } from './dom.js';
import { listingsPage } from './listings.js';
import { detailPage } from './detail.js';
import { marketPage } from './market.js';
import { activityPage } from './activity.js';
import { onConnection } from './live.js';

const main = document.getElementById('main');
const indicator = document.getElementById('live-state');
let cleanup = null;

onConnection((state) => {
  indicator.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : state === 'offline' ? 'Offline' : 'Connecting…';
  indicator.dataset.state = state;
});

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const hash = decodeURIComponent(location.hash.replace(/^#/, '')) || '/listings';
  const [, section, ...rest] = hash.split('/');
  for (const link of document.querySelectorAll('nav.main a')) {
    if (link.getAttribute('href') === `#/${section}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (section === 'listings' && rest.length) {
    cleanup = detailPage(main, rest.join('/'));
    document.title = `Listing ${rest.join('/')} · KubeEstateHub`;
  } else if (section === 'market') {
    cleanup = marketPage(main);
    document.title = 'Market · KubeEstateHub';
  } else if (section === 'activity') {
    cleanup = activityPage(main);
    document.title = 'Live activity · KubeEstateHub';
  } else if (section === 'listings' || !section) {
    cleanup = listingsPage(main);
    document.title = 'Listings · KubeEstateHub';
  } else {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/listings' }, 'Back to the listings')));
  }
  main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
route();
