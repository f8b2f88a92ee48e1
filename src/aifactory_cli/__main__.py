from aifactory_cli.cli import main

main()
