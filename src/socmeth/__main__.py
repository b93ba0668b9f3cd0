from socmeth.cli import main

main()
