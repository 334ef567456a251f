//! Unit tests of `reso`.

use super::*;

#[test]
fn statuses_accept_both_spellings_and_print_reso_spelling() {
    let human: StandardStatus = serde_json::from_str("\"Active Under Contract\"").unwrap();
    let compact: StandardStatus = serde_json::from_str("\"ActiveUnderContract\"").unwrap();
    assert_eq!(human, compact);
    assert_eq!(
        serde_json::to_string(&human).unwrap(),
        "\"Active Under Contract\""
    );
    assert!(serde_json::from_str::<StandardStatus>("\"active\"").is_err());
    assert_eq!(
        "Coming Soon".parse::<StandardStatus>().unwrap(),
        StandardStatus::ComingSoon
    );
}

#[test]
fn prices_are_exact_numbers_with_two_decimals() {
    let p: Price = serde_json::from_str("123456789012.34").unwrap();
    assert_eq!(p.get().to_string(), "123456789012.34");
    assert_eq!(serde_json::to_string(&p).unwrap(), "123456789012.34");
    assert_eq!(
        serde_json::from_str::<Price>("1.5e5").unwrap().get(),
        Decimal::from(150_000)
    );
    assert_eq!(
        serde_json::to_string(&serde_json::from_str::<Price>("100.50").unwrap()).unwrap(),
        "100.5"
    );
    for bad in ["0", "-1", "1.001", "\"100\"", "1e13", "null"] {
        assert!(
            serde_json::from_str::<Price>(bad).is_err(),
            "{bad} must be refused"
        );
    }
}

#[test]
fn coordinates_are_bounded() {
    assert!(serde_json::from_str::<Latitude>("45.12345678").is_ok());
    assert!(serde_json::from_str::<Latitude>("90.1").is_err());
    assert!(serde_json::from_str::<Longitude>("-180.000000001").is_err());
}

#[test]
fn text_is_trimmed_bounded_and_free_of_control_characters() {
    assert_eq!(
        ShortText::new("  Springfield ").unwrap().as_str(),
        "Springfield"
    );
    assert!(ShortText::new("   ").is_err());
    assert!(ShortText::new(&"x".repeat(256)).is_err());
    assert!(ShortText::new("a\nb").is_err());
    assert!(Remarks::new("line one\nline two").is_ok());
    assert!(Remarks::new("bell\u{7}").is_err());
    // Characters, not bytes: 255 multi-byte characters fit.
    assert!(ShortText::new(&"é".repeat(255)).is_ok());
}
