//! JSON Schema of the public contract, generated from the Rust types.
//!
//! `kubeestatehub schema` prints it; `docs/schema/listing-event.v1.json` is the checked-in
//! copy, and a test fails when the two differ, so the contract cannot drift silently.

use crate::envelope::EventEnvelope;

/// The JSON Schema (draft 2020-12) of a published listing event envelope.
pub fn envelope_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<EventEnvelope>();
    schema.to_value()
}

/// Pretty JSON of [`envelope_schema`], newline-terminated, as checked in.
pub fn envelope_schema_pretty() -> String {
    let mut text = serde_json::to_string_pretty(&envelope_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/schema/listing-event.v1.json"
        );
        let current = super::envelope_schema_pretty();
        if std::env::var_os("KEH_BLESS").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == current,
            "docs/schema/listing-event.v1.json is stale: run `KEH_BLESS=1 cargo test -p keh-events`"
        );
    }
}
