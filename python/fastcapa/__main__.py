from fastcapa.cli import main

raise SystemExit(main())
