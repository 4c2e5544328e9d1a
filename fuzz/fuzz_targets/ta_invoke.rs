//! TaCore::invoke on arbitrary command ids and bytes (a TA holding a wallet and an agent).
//! Property: see `kms_props::check_ta_invoke`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_ta_invoke(data);
});
