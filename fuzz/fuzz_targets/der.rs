//! The companion's DER ECDSA signature parser (strict: canonical encodings only).
//! Property: see `kms_props::check_der`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_der(data);
});
