//! The companion's hex, address and number parsers (extract module).
//! Property: see `kms_props::check_hex`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_hex(data);
});
