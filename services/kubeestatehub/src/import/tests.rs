//! Unit tests of `import`.

use super::*;

#[test]
fn csv_cells_become_typed_fields_and_bad_rows_say_why() {
    let file = b"ListingKey,ListPrice,City,Colour\nA,100000.50,Springfield,red\nB,12x,Shelbyville,\n,5,Nowhere,\nC,5,Caf\xe9,\n";
    let mut ignored = BTreeSet::new();
    let rows = read(file, &mut ignored);
    assert_eq!(ignored.into_iter().collect::<Vec<_>>(), ["Colour"]);
    assert_eq!(rows.len(), 4);
    let first = rows[0].1.as_ref().expect("row A");
    assert_eq!(
        first["ListPrice"].to_string(),
        "100000.50",
        "numbers stay exact"
    );
    assert!(!first.contains_key("Colour"));
    assert_eq!(
        rows[1].1.as_ref().expect("row B")["ListPrice"],
        Value::String("12x".into())
    );
    assert!(
        rows[3]
            .1
            .as_ref()
            .expect_err("invalid UTF-8")
            .contains("UTF-8")
    );
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "file line numbers"
    );
}

#[test]
fn json_lines_are_read_line_by_line() {
    let mut ignored = BTreeSet::new();
    let rows = read(
        b"{\"ListingKey\":\"A\"}\n\n{broken\n{\"ListingKey\":\"B\"}\n",
        &mut ignored,
    );
    assert_eq!(rows.len(), 3);
    assert!(rows[1].1.is_err());
    assert_eq!(rows[2].0, 4);
}
