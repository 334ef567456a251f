// The dashboard shell: navigation, hash routing (#/listings, #/listings/{key}, #/market,
// #/activity) and the live-connection indicator.

import { h, fill } from './dom.js';
import { listingsPage } from './listings.js';
import { detailPage } from './detail.js';
import { marketPage } from './market.js';
import { activityPage } from './activity.js';
import { onConnection } from './live.js';
import { onSession, signOut } from './api.js';
import { signInPage } from './signin.js';

const main = document.getElementById('main');
const indicator = document.getElementById('live-state');
let cleanup = null;

onConnection((state) => {
  indicator.textContent = state === 'live' ? 'Live' : state === 'reconnecting' ? 'Reconnecting…' : state === 'offline' ? 'Offline' : 'Connecting…';
  indicator.dataset.state = state;
});

const account = document.getElementById('account');
onSession((user) => {
  fill(account, user
    ? [h('span', { class: 'who' }, `${user.username} (${user.role})`),
      h('button', { type: 'button', class: 'link', onclick: async () => { await signOut(); route(); } }, 'Sign out')]
    : h('a', { href: `#/sign-in?next=${encodeURIComponent(location.hash || '#/listings')}` }, 'Sign in'));
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
  if (section.startsWith('sign-in')) {
    const next = new URLSearchParams(hash.split('?')[1] || '').get('next') || '#/listings';
    cleanup = signInPage(main, next);
    document.title = 'Sign in · KubeEstateHub';
  } else if (section === 'listings' && rest.length) {
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
