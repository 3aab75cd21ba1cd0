use super::*;

#[test]
fn domains() {
    for ok in ["a.example", "xn--bcher-kva.example", "localhost", "a-b.c"] {
        assert!(valid_domain(ok), "{ok}");
    }
    for bad in ["", "*.example", "a..b", "-a.b", "a b", "a/b", "a.example."] {
        assert!(!valid_domain(bad), "{bad}");
    }
}
