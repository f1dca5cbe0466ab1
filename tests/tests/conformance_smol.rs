//! The conformance suite against `wendy-smol`.

wendy_tests::conformance_tests!(wendy_tests::smol_driver::SmolDriver);
