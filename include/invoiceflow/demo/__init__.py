"""The demo company and its bank: realistic source files and statements for `make demo` and the tests."""
