from shipyard.app.cli.main import main

main()
