from benchmarks.gpu_validation.suite import main

raise SystemExit(main())
