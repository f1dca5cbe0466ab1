//! The conformance suite against `wendy-tokio`.

wendy_tests::conformance_tests!(wendy_tests::tokio_driver::TokioDriver);
