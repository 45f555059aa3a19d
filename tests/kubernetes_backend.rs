//! The Kubernetes backend against the in-repo stand-in of the API (see
//! `support/kube_standin.rs`): runners as real containers.
