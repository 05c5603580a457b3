INSERT INTO cosine (id, label, v) SELECT id, label, v FROM cosine_stage WHERE id = (SELECT nextval('cosine_stage_seq'));
