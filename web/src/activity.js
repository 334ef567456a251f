// Live activity: listing events as they happen (pushed, never polled).

import { h, fill, formatMoney, formatTime } from './dom.js';
import { onListingEvent } from './live.js';

const KEEP = 200;

/** One line saying what an event did. */
export function describe(envelope) {
  const d = envelope.Data || {};
  switch (envelope.EventType) {
    case 'ListingCreated':
      return `New ${d.PropertyType || 'listing'} listed at ${formatMoney(d.ListPrice)}${d.City ? ` in ${d.City}` : ''} (${d.StandardStatus})`;
    case 'ListingPriceChanged':
      return `Price ${formatMoney(d.PreviousListPrice)} → ${formatMoney(d.ListPrice)}`;
    case 'ListingStatusChanged':
      return `${d.PreviousStandardStatus} → ${d.StandardStatus}${d.ClosePrice ? ` at ${formatMoney(d.ClosePrice)}` : ''}`;
    case 'ListingDetailsUpdated':
      return `Details changed: ${Object.keys(d.Changes || {}).join(', ') || '—'}`;
    case 'MediaAdded':
      return `${d.MediaCategory || 'Media'} added`;
    case 'MediaRemoved':
      return 'Media removed';
    case 'MediaReordered':
      return 'Media reordered';
    case 'OpenHouseScheduled':
      return `Open house on ${d.OpenHouseDate || formatTime(d.OpenHouseStartTime)}`;
    case 'OpenHouseCanceled':
      return 'Open house canceled';
    default:
      return envelope.EventType;
  }
}

export function activityPage(root) {
  const list = h('ol', { class: 'feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const empty = h('p', { class: 'status' }, 'Waiting for listing events… (they appear here as they happen)');
  const unsubscribe = onListingEvent((envelope) => {
    if (envelope.EventType === 'Resync') return;
    empty.hidden = true;
    list.prepend(h('li', { class: 'flash' },
      h('time', { datetime: envelope.RecordedAt }, formatTime(envelope.RecordedAt)),
      h('span', { class: 'event-type' }, envelope.EventType),
      h('a', { href: `#/listings/${encodeURIComponent(envelope.ListingKey)}` }, envelope.ListingKey),
      h('span', { class: 'event-text' }, describe(envelope)),
      h('span', { class: 'actor' }, envelope.Actor)));
    while (list.children.length > KEEP) list.lastElementChild.remove();
  });
  fill(root, h('div', { class: 'page-head' }, h('h1', {}, 'Live activity')), empty, list);
  return unsubscribe;
}
