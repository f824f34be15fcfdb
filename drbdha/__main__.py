from drbdha.cli import main

raise SystemExit(main())
