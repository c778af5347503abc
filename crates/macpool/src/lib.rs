//! Nothing: the `macpool` binary (`src/main.rs`) is the whole package. This empty library target
//! exists so that the package's tests can depend on the package itself with the test-only
//! feature `standin` (`[dev-dependencies] macpool = { path = ".", features = ["standin"] }`):
//! Cargo only accepts a dependency on a package that has a library, and that is the one way to
//! turn a feature on for a package's tests and never for its release build.
