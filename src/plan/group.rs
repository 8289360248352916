//! The group step: everything one ScalingGroup reconcile decides, from the group, its
//! Instances and `now`.

use crate::api::ScalingGroup;

/// A stable hash of the group's Instance template (FNV-1a over its JSON), 10 hex digits.
pub fn template_hash(group: &ScalingGroup) -> String {
    let bytes = serde_json::to_vec(&group.spec.template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}
