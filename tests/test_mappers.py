"""Mappers: ``field_mapping`` and ``fallbacks`` as the seed README explains them, and the bad values."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth.models import User

from crmify.exceptions import MappingError
from crmify.mappers import DjangoUserFieldMapper, LeadModelFieldMapper
from tests.doubles import CallableMapper, WrongTypeMapper
from tests.testapp.mappers import UserProfileFieldMapper
from tests.testapp.models import UserProfile


def user(**fields: object) -> User:
    """An unsaved user: mapping reads attributes, it needs no database."""
    values: dict[str, object] = {
        "username": "ada",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
    }
    values.update(fields)
    return User(**values)


def test_default_mapper_copies_names_and_email() -> None:
    mapped = DjangoUserFieldMapper().map(user())
    assert mapped.values == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
    }
    assert mapped.from_fallback == set()


def test_user_with_empty_email_gets_username_as_email() -> None:
    mapped = DjangoUserFieldMapper().map(user(email=""))
    assert mapped.values["email"] == "ada"
    assert mapped.from_fallback == {"email"}


def test_fallback_applies_when_the_primary_value_is_none_or_whitespace() -> None:
    assert DjangoUserFieldMapper().map(user(email=None)).values["email"] == "ada"
    assert DjangoUserFieldMapper().map(user(email="   ")).values["email"] == "ada"


def test_fallback_is_ignored_when_the_primary_value_is_present() -> None:
    mapped = DjangoUserFieldMapper().map(user(email="real@example.com"))
    assert mapped.values["email"] == "real@example.com"
    assert "email" not in mapped.from_fallback


def test_double_underscore_paths_cross_relations() -> None:
    owner = user(first_name="Grace", last_name="Hopper", email="grace@example.com")
    profile = UserProfile(user=owner, company="Navy", phone="555-0100", nickname="Amazing Grace")
    mapped = UserProfileFieldMapper().map(profile)
    assert mapped.values == {
        "first_name": "Grace",
        "last_name": "Hopper",
        "email": "grace@example.com",
        "company": "Navy",
        "phone": "555-0100",
    }
    assert mapped.custom_fields == {"Nickname__c": "Amazing Grace"}


def test_fallbacks_across_relations_and_on_the_row_itself() -> None:
    owner = user(username="grace", email="", last_name="")
    profile = UserProfile(user=owner, nickname="Hopper")
    mapped = UserProfileFieldMapper().map(profile)
    assert mapped.values["email"] == "grace"
    assert mapped.values["last_name"] == "Hopper"
    assert mapped.from_fallback == {"email", "last_name"}


def test_a_method_name_as_source_is_called() -> None:
    profile = UserProfile(user=user(username="grace"), nickname="")
    # display_name() falls back to the username when there is no nickname
    assert UserProfileFieldMapper().map(profile).custom_fields == {"Nickname__c": "grace"}


def test_a_function_as_source_is_called_with_the_row() -> None:
    mapped = CallableMapper().map(user(first_name="Ada", last_name="Lovelace"))
    assert mapped.values["first_name"] == "ADA!"
    assert mapped.values["description"] == "Ada Lovelace"


def test_custom_fields_target_keeps_numbers_and_booleans_and_dates_as_text() -> None:
    joined = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    mapped = CallableMapper().map(user(date_joined=joined, is_staff=True))
    assert mapped.custom_fields == {"Joined": "2024-05-01T12:30:00+00:00", "Staff": True}
    assert "Joined" not in mapped.values


def test_non_ascii_and_emoji_values_survive_unchanged() -> None:
    mapped = DjangoUserFieldMapper().map(
        user(first_name="Zoë 🦄", last_name="Łukasiewicz-Θεοδώρου", email="zoë@exämple.com")
    )
    assert mapped.values == {
        "first_name": "Zoë 🦄",
        "last_name": "Łukasiewicz-Θεοδώρου",
        "email": "zoë@exämple.com",
    }


def test_a_relation_that_is_empty_maps_to_blank() -> None:
    class ManagerMapper(LeadModelFieldMapper):
        field_mapping = {"user__first_name": "first_name"}

    profile = UserProfile(company="Orphan Ltd")
    assert ManagerMapper().map(profile).values == {"first_name": ""}


def test_a_dict_value_raises_a_readable_mapping_error() -> None:
    with pytest.raises(MappingError) as caught:
        WrongTypeMapper().map(user())
    assert str(caught.value) == (
        "description (from as_dict) got a dict: {'name': 'ada'}. "
        "A mapper must give text, a number, a boolean or a date."
    )


def test_a_list_value_raises_a_readable_mapping_error() -> None:
    class ListMapper(LeadModelFieldMapper):
        field_mapping = {"tags": "title"}

    row = user()
    row.tags = ["a", "b"]  # type: ignore[attr-defined]
    with pytest.raises(MappingError, match=r"title \(from tags\) got a list: \['a', 'b'\]\."):
        ListMapper().map(row)


def test_a_dict_into_a_custom_field_raises_a_mapping_error() -> None:
    class CustomDictMapper(LeadModelFieldMapper):
        field_mapping = {"tags": "custom_fields__Tags"}

    row = user()
    row.tags = {"a": 1}  # type: ignore[attr-defined]
    with pytest.raises(MappingError, match=r"custom_fields__Tags \(from tags\) got a dict"):
        CustomDictMapper().map(row)


def test_a_value_longer_than_the_lead_field_raises_a_mapping_error() -> None:
    with pytest.raises(
        MappingError,
        match=r"first_name \(from first_name\) is 300 characters long; the lead keeps 255",
    ):
        DjangoUserFieldMapper().map(user(first_name="x" * 300))


def test_long_text_is_fine_in_a_text_field() -> None:
    class BioMapper(LeadModelFieldMapper):
        field_mapping = {"first_name": "description"}

    assert len(BioMapper().map(user(first_name="é" * 5000)).values["description"]) == 5000


def test_a_target_that_is_not_a_lead_field_raises_a_mapping_error() -> None:
    class TypoMapper(LeadModelFieldMapper):
        field_mapping = {"email": "emial"}

    with pytest.raises(MappingError, match="'emial' is not a lead field"):
        TypoMapper().map(user())
