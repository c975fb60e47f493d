"""The `shipyard` command line (`main`), one module per stage; `common` holds what every command shares."""
