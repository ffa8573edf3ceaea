from uvlm.cli.main import main

main()
