// RESO vocabulary the forms offer (the API accepts these human spellings).

export const STATUSES = [
  'Active', 'Active Under Contract', 'Canceled', 'Closed', 'Coming Soon', 'Delete', 'Expired',
  'Hold', 'Incomplete', 'Pending', 'Withdrawn',
];

export const PROPERTY_TYPES = [
  'Residential', 'Residential Lease', 'Residential Income', 'Land', 'Farm', 'Commercial Sale',
  'Commercial Lease', 'Business Opportunity', 'Manufactured In Park',
];

export const MEDIA_CATEGORIES = ['Photo', 'Video', 'Floor Plan', 'Document', 'Virtual Tour'];

/** Descriptive fields the create and edit forms show: [name, label, kind]. */
export const DETAIL_FIELDS = [
  ['UnparsedAddress', 'Address', 'text'],
  ['City', 'City', 'text'],
  ['StateOrProvince', 'State', 'text'],
  ['PostalCode', 'Postal code', 'text'],
  ['SubdivisionName', 'Subdivision', 'text'],
  ['BedroomsTotal', 'Bedrooms', 'integer'],
  ['BathroomsTotalInteger', 'Bathrooms', 'integer'],
  ['LivingArea', 'Living area (sq ft)', 'number'],
  ['YearBuilt', 'Year built', 'integer'],
  ['ListingId', 'MLS number (ListingId)', 'text'],
  ['ListAgentKey', 'Listing agent key', 'text'],
  ['PublicRemarks', 'Public remarks', 'textarea'],
  ['PrivateRemarks', 'Private remarks', 'textarea'],
];

/** The value an input holds, typed for JSON (numbers stay numbers; text stays text). */
export function inputValue(input, kind) {
  const raw = input.value.trim();
  if (raw === '') return undefined;
  if (kind === 'integer' || kind === 'number') {
    const n = Number(raw);
    // A non-number is sent as typed: the API names the field and the problem.
    return Number.isFinite(n) ? n : raw;
  }
  return raw;
}
