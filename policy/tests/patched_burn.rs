//! The patched burn (`patches/README.md`) is the burn this workspace builds: the backend
//! hooks below exist only in `patches/burn-backend`, and only `patches/burn-flex` answers
//! `true`. A burn bump that left the `[patch]` unused (Cargo only warns) fails here, at
//! compile time or at the assertion; `patches/verify.sh` checks the vendored trees and the
//! lock file.

use burn_backend::ops::ModuleOps;
use burn_flex::Flex;

#[test]
fn the_patched_burn_is_the_burn_in_use() {
    assert!(
        <Flex as ModuleOps<Flex>>::has_attention_backward(),
        "burn-flex without the fused attention backward: patches/burn-flex is not in use"
    );
    assert!(
        <Flex as ModuleOps<Flex>>::has_layer_norm_backward(),
        "burn-flex without the fused layer norm backward: patches/burn-flex is not in use"
    );
}
