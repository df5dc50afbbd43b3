//! From a profile to the engine's container spec: pure, so every knob is
//! unit-tested without an engine.

use std::collections::HashMap;
use warmpool_core::labels::{self, unique_suffix};
use warmpool_core::{ImageConfig, Profile};
use warmpool_runtime::ContainerSpec;

/// The container for one job of `profile`: the profile's knobs, warmpool's labels,
/// the profile's fixed env, and nothing of any job.
pub fn container_spec(profile: &Profile, image: &ImageConfig) -> ContainerSpec {
    let mut container_labels: HashMap<String, String> = profile
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    container_labels.insert(labels::MANAGED.into(), "true".into());
    container_labels.insert(labels::PROFILE.into(), profile.name.clone());
    container_labels.insert(labels::GATE.into(), warmpool_gate::GATE_DIGEST.into());
    container_labels.insert(labels::ROLE.into(), "job".into());
    let _ = image;
    ContainerSpec {
        name: format!("warmpool-{}-{}", profile.name, unique_suffix()),
        image: profile.image.clone(),
        env: profile
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        user: profile.user.clone(),
        workdir: profile.workdir.clone(),
        labels: container_labels,
        memory: profile.memory,
        nano_cpus: profile.cpus.map(|c| (c * 1e9) as i64),
        pids_limit: profile.pids_limit,
        network: profile.network.clone(),
        read_only: profile.read_only,
        tmpfs: profile
            .tmpfs
            .iter()
            .map(|t| (t.path.clone(), t.options.clone()))
            .collect(),
        ro_binds: profile
            .mounts
            .iter()
            .map(|m| (m.source.clone(), m.target.clone()))
            .collect(),
        cap_add: profile.cap_add.clone(),
        cap_drop: profile.cap_drop.clone(),
        security_opt: profile.security_opt.clone(),
        runtime: profile.runtime.clone(),
        gate_args: if profile.reuse > 1 {
            vec!["--reuse".to_string()]
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warmpool_core::Config;

    #[test]
    fn knobs_reach_the_engine_spec() {
        let c = Config::parse(
            r#"
            [profiles.locked]
            image = "img:1"
            env = { GREETING = "hi" }
            memory = "256m"
            cpus = 1.5
            pids_limit = 64
            network = "none"
            read_only = true
            tmpfs = ["/tmp:size=64m"]
            mounts = ["/srv/data:/data:ro"]
            cap_drop = ["ALL"]
            security_opt = ["no-new-privileges"]
            user = "1000:1000"
            workdir = "/work"
            runtime = "runsc"
            labels = { team = "infra" }
            "#,
        )
        .unwrap();
        let s = container_spec(&c.profiles["locked"], &ImageConfig::default());
        assert_eq!(s.image, "img:1");
        assert_eq!(s.env, vec!["GREETING=hi"]);
        assert_eq!(s.memory, Some(256 << 20));
        assert_eq!(s.nano_cpus, Some(1_500_000_000));
        assert_eq!(s.pids_limit, Some(64));
        assert_eq!(s.network.as_deref(), Some("none"));
        assert!(s.read_only);
        assert_eq!(s.tmpfs.get("/tmp").map(String::as_str), Some("size=64m"));
        assert_eq!(s.ro_binds, vec![("/srv/data".into(), "/data".into())]);
        assert_eq!(s.cap_drop, vec!["ALL"]);
        assert_eq!(s.security_opt, vec!["no-new-privileges"]);
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        assert_eq!(s.workdir.as_deref(), Some("/work"));
        assert_eq!(s.runtime.as_deref(), Some("runsc"));
        assert_eq!(s.labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(
            s.labels.get(labels::MANAGED).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            s.labels.get(labels::PROFILE).map(String::as_str),
            Some("locked")
        );
        assert!(s.name.starts_with("warmpool-locked-"));
        let other = container_spec(&c.profiles["locked"], &ImageConfig::default());
        assert_ne!(s.name, other.name, "names must be unique");
    }
}
