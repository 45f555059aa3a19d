//! Volumes on runners: each runner claims one free volume of a name.
//!
//! A Fly volume serves one machine at a time, so a pool that mounts one
//! needs a volume of that name per runner it may run. Runners of one backend
//! never pick the same volume (a claim is held in this process from the pick
//! until the runner's machine is destroyed); volumes attached to machines of
//! anyone else are skipped as the API reports them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::api::Volume;
use super::error::FlyError;

/// The volume a backend mounts on every runner: its name and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VolumeMount {
    pub(super) name: String,
    pub(super) path: String,
}

/// Volume ids claimed by this backend's runners.
pub(super) type Claims = Arc<Mutex<HashSet<String>>>;

/// One runner's hold on a volume, released when dropped.
#[derive(Debug)]
pub(crate) struct VolumeClaim {
    pub(super) id: String,
    /// Where the volume is.
    pub(super) region: Option<String>,
    claims: Claims,
}

impl Drop for VolumeClaim {
    fn drop(&mut self) {
        self.claims.lock().expect("poisoned").remove(&self.id);
    }
}

/// A volume state that will never serve a machine again.
fn going(volume: &Volume) -> bool {
    matches!(
        volume.state.as_deref(),
        Some("pending_destroy" | "destroying" | "destroyed" | "scheduling_destroy")
    )
}

/// Claims a free volume named `mount.name` among `volumes` (in `region`
/// when one is set) for one runner.
///
/// # Errors
///
/// [`FlyError::VolumeMissing`] when the app has no such volume,
/// [`FlyError::VolumesAttached`] when every one is attached or claimed.
pub(super) fn claim(
    volumes: &[Volume],
    mount: &VolumeMount,
    region: Option<&str>,
    app: &str,
    claims: &Claims,
) -> Result<VolumeClaim, FlyError> {
    let named: Vec<&Volume> = volumes
        .iter()
        .filter(|v| v.name == mount.name && !going(v))
        .filter(|v| region.is_none_or(|r| v.region.as_deref() == Some(r)))
        .collect();
    if named.is_empty() {
        return Err(FlyError::VolumeMissing {
            app: app.to_owned(),
            name: mount.name.clone(),
            in_region: region.map(|r| format!(" in region {r}")).unwrap_or_default(),
        });
    }
    let mut held = claims.lock().expect("poisoned");
    let free = named
        .iter()
        .find(|v| v.attached_machine_id.is_none() && !held.contains(&v.id))
        .ok_or(FlyError::VolumesAttached {
            name: mount.name.clone(),
            count: named.len(),
        })?;
    held.insert(free.id.clone());
    Ok(VolumeClaim {
        id: free.id.clone(),
        region: free.region.clone(),
        claims: Arc::clone(claims),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(id: &str, name: &str, region: &str, attached: Option<&str>) -> Volume {
        Volume {
            id: id.into(),
            name: name.into(),
            region: Some(region.into()),
            state: Some("created".into()),
            attached_machine_id: attached.map(Into::into),
        }
    }

    fn mount() -> VolumeMount {
        VolumeMount {
            name: "scratch".into(),
            path: "/scratch".into(),
        }
    }

    #[test]
    fn each_claim_takes_a_free_volume_of_the_name_until_dropped() {
        let volumes = [
            volume("vol_a", "scratch", "ord", Some("m_other")),
            volume("vol_b", "scratch", "ord", None),
            volume("vol_c", "models", "ord", None),
            volume("vol_d", "scratch", "ord", None),
        ];
        let claims = Claims::default();
        let first = claim(&volumes, &mount(), None, "app", &claims).unwrap();
        let second = claim(&volumes, &mount(), None, "app", &claims).unwrap();
        assert_eq!((first.id.as_str(), second.id.as_str()), ("vol_b", "vol_d"));
        let full = claim(&volumes, &mount(), None, "app", &claims).unwrap_err();
        assert_eq!(
            full,
            FlyError::VolumesAttached {
                name: "scratch".into(),
                count: 3
            }
        );
        drop(first);
        assert_eq!(claim(&volumes, &mount(), None, "app", &claims).unwrap().id, "vol_b");
    }

    #[test]
    fn a_missing_name_or_region_is_named_in_the_error() {
        let volumes = [volume("vol_a", "scratch", "ord", None)];
        let claims = Claims::default();
        let err = claim(&volumes, &mount(), Some("ams"), "media", &claims).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`scratch`") && text.contains("ams") && text.contains("`media`"),
            "{text}"
        );
        assert!(matches!(err, FlyError::VolumeMissing { .. }));
        let other = VolumeMount {
            name: "nope".into(),
            path: "/x".into(),
        };
        assert!(matches!(
            claim(&volumes, &other, None, "media", &claims),
            Err(FlyError::VolumeMissing { .. })
        ));
    }
}
