from wsdlab.cli import main

main()
