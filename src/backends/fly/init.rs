//! The machine's `init` object: how its image's program is started.

use serde::Serialize;

/// What a runner machine runs instead of its image's defaults: the `init`
/// object of the Machines API (FLAME's `:init` option). Empty by default, so
/// the image's entrypoint and command run, which is right when the image is
/// the app's own and its `main` calls
/// [`run_if_runner`](crate::run_if_runner) first.
///
/// # Examples
///
/// ```
/// use ractor_flame::fly::{FlyBackend, MachineInit};
///
/// let init = MachineInit::new().cmd(["/app/server", "--runner"]).swap_size_mb(512);
/// let backend = FlyBackend::new().init(init);
/// # let _ = backend;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MachineInit {
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap_size_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tty: Option<bool>,
}

fn strings<I, S>(items: I) -> Option<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Some(items.into_iter().map(Into::into).collect())
}

impl MachineInit {
    /// Nothing overridden (`{}` on the wire).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ractor_flame::fly::MachineInit::new(), Default::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The command, replacing the image's `CMD`.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().cmd(["serve"]);
    /// # let _ = init;
    /// ```
    pub fn cmd<I, S>(mut self, cmd: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = strings(cmd);
        self
    }

    /// The entrypoint, replacing the image's `ENTRYPOINT`.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().entrypoint(["/app/server"]);
    /// # let _ = init;
    /// ```
    pub fn entrypoint<I, S>(mut self, entrypoint: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = strings(entrypoint);
        self
    }

    /// A command run instead of both entrypoint and command.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().exec(["/app/server", "--runner"]);
    /// # let _ = init;
    /// ```
    pub fn exec<I, S>(mut self, exec: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exec = strings(exec);
        self
    }

    /// Extra kernel arguments.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().kernel_args(["quiet"]);
    /// # let _ = init;
    /// ```
    pub fn kernel_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kernel_args = strings(args);
        self
    }

    /// Swap space, in MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().swap_size_mb(1024);
    /// # let _ = init;
    /// ```
    pub fn swap_size_mb(mut self, mib: u32) -> Self {
        self.swap_size_mb = Some(mib);
        self
    }

    /// Whether the program gets a TTY.
    ///
    /// # Examples
    ///
    /// ```
    /// let init = ractor_flame::fly::MachineInit::new().tty(false);
    /// # let _ = init;
    /// ```
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = Some(tty);
        self
    }
}
