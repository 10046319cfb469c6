from caproute.cli import main

main()
