//! The v0.7 JSON-RPC UserOperation (kms-chain): decode, convert, re-encode, hash.
//! Property: see `kms_props::check_userop_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_userop_json(data);
});
