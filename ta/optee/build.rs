//! Generates the TA header (`user_ta_header.rs`: UUID, flags, stack and heap
//! sizes) for OP-TEE builds and, for a real TA build (feature `optee` without
//! `optee-doc`), emits the TA link directives, which need the TA dev kit
//! (`TA_DEV_KIT_DIR`, from an OP-TEE OS build).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "optee")]
    optee::build();
}

#[cfg(feature = "optee")]
mod optee {
    use optee_utee_build::{Builder, HeaderFileGenerator, TaConfig};
    use std::path::PathBuf;

    /// `TA_FLAG_SINGLE_INSTANCE | TA_FLAG_MULTI_SESSION |
    /// TA_FLAG_INSTANCE_KEEP_ALIVE` (OP-TEE's `user_ta_header.h`): one core
    /// shared by every session, kept loaded between sessions so pending
    /// nonces survive a session closing.
    const TA_FLAGS: u32 = 0x4 | 0x8 | 0x100;
    /// Heap: requests and responses of up to 256 KiB, the sealed snapshot
    /// (up to 1 MiB) and crypto working memory.
    const TA_DATA_SIZE: u32 = 4 * 1024 * 1024;
    /// Stack: BIP32/ECDSA/P-256 and PBKDF2 need more than the default.
    const TA_STACK_SIZE: u32 = 128 * 1024;

    pub fn build() {
        let config = match TaConfig::new_default_with_cargo_env(kms_proto::TA_UUID) {
            Ok(c) => c
                .ta_flags(TA_FLAGS)
                .ta_data_size(TA_DATA_SIZE)
                .ta_stack_size(TA_STACK_SIZE),
            Err(e) => panic!("invalid TA configuration: {e:?}"),
        };
        let doc_only = std::env::var_os("CARGO_FEATURE_OPTEE_DOC").is_some();
        if doc_only {
            // Type-checking only: the header, but no TA linking (there is no
            // TA dev kit on this host).
            let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
            let header = HeaderFileGenerator::new()
                .generate(&config)
                .unwrap_or_else(|e| panic!("cannot generate the TA header: {e:?}"));
            std::fs::write(out.join("user_ta_header.rs"), header)
                .unwrap_or_else(|e| panic!("cannot write the TA header: {e}"));
        } else {
            println!("cargo:rerun-if-env-changed=TA_DEV_KIT_DIR");
            if std::env::var_os("TA_DEV_KIT_DIR").is_none() {
                panic!(
                    "building the OP-TEE TA needs TA_DEV_KIT_DIR (the export-ta_arm64 directory \
                     of an OP-TEE OS build); to only type-check, use --features optee-doc"
                );
            }
            Builder::new(config)
                .build()
                .unwrap_or_else(|e| panic!("optee-utee-build failed: {e:?}"));
        }
    }
}
