//! The registry refuses a factory whose driver reports another name.

use std::sync::Arc;
use std::time::Duration;

use servicegroup_core::{
    async_trait, Beats, Capabilities, Config, Driver, Error, ErrorKind, GroupId, HeartbeatReport,
    HolderUpdate, InstanceId, MemberKey, MemberRecord, Metadata, Registered, Registration,
    Registry, Result, ServiceGroup,
};

/// A driver that reports the name it is given and stores nothing.
#[derive(Debug)]
struct Named(&'static str);

fn nothing<T>() -> Result<T> {
    Err(Error::unavailable("this test driver stores nothing"))
}

#[async_trait]
impl Driver for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Duration::from_millis(1))
    }
    async fn register(&self, _: &Registration) -> Result<Registered> {
        nothing()
    }
    async fn heartbeat(&self, _: &[Beats<'_>]) -> Result<HeartbeatReport> {
        nothing()
    }
    async fn remove(&self, _: &MemberKey, _: Option<InstanceId>) -> Result<bool> {
        nothing()
    }
    async fn set_metadata(
        &self,
        _: &MemberKey,
        _: InstanceId,
        _: &Metadata,
    ) -> Result<HolderUpdate> {
        nothing()
    }
    async fn set_forced_down(&self, _: &MemberKey, _: bool) -> Result<bool> {
        nothing()
    }
    async fn get(&self, _: &MemberKey) -> Result<Option<MemberRecord>> {
        nothing()
    }
    async fn list(&self, _: &GroupId) -> Result<Vec<MemberRecord>> {
        nothing()
    }
    async fn groups(&self) -> Result<Vec<GroupId>> {
        nothing()
    }
}

servicegroup_core::register_driver! {
    name: "misnamed",
    description: "a factory whose driver calls itself something else",
    build: |_config| Box::pin(async { Ok(Arc::new(Named("other")) as Arc<dyn Driver>) }),
}

servicegroup_core::register_driver! {
    name: "wellnamed",
    description: "a factory whose driver reports its registered name",
    build: |_config| Box::pin(async { Ok(Arc::new(Named("wellnamed")) as Arc<dyn Driver>) }),
}

#[tokio::test]
async fn a_driver_reporting_another_name_is_refused() {
    let err = ServiceGroup::connect(Config::with_driver("misnamed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.contains("\"misnamed\"") && text.contains("\"other\""),
        "{text}"
    );
    let sg = ServiceGroup::connect(Config::with_driver("wellnamed"))
        .await
        .unwrap();
    assert_eq!(sg.driver_name(), "wellnamed");
    assert!(Registry::names().contains(&"misnamed"));
}
