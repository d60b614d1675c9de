"""``python -m bigbird_ft.convert src=DIR|NAME out=DIR ...`` (the logic: models/convert.py)."""

from .models.convert import main

if __name__ == "__main__":
    main()
